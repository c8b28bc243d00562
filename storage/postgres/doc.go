// Package postgres is the PostgreSQL driver of sluice, on
// github.com/jackc/pgx/v5: limits live in one table of the database the
// service already has, are shared by every process that uses the table,
// and survive restarts of the processes and of the server.
//
//	pool, err := pgxpool.New(ctx, "postgres://app@db.internal/app")
//	store, err := postgres.New(ctx, pool)                  // creates sluice_records if missing
//	lim, err := limiter.New(store, []limiter.Bucket{{Capacity: 5, Period: 10 * time.Second}})
//
// # The table
//
// One row per key: key bytea (the primary key, not DEFERRABLE), value
// bytea NOT NULL, version bigint (an identity column) and expires_at
// timestamptz NOT NULL. Schema returns
// the DDL for migrations; New creates the table unless WithCreateTable(false)
// says not to, and checks the columns of an existing table either way, so
// a table that does not fit fails New with an error that names the column.
// Keys are stored as bytes, so any key reaches the table exactly, whatever
// the encodings; to read them in psql, use convert_from(key, 'UTF8').
// Keys reach the table in plain text: hash them if they identify people.
//
// WithUnlogged creates an UNLOGGED table: faster writes, but a crash of the
// server empties it (every limit starts full again) and replicas do not
// get it. Its version sequence stays logged, so versions never repeat.
//
// # Statements
//
// Get, Delete and every CompareAndSwap that swaps are one statement and
// one round trip each, prepared once per connection (pgx's statement
// cache). For CompareAndSwap that is an INSERT ... ON CONFLICT DO UPDATE
// when expected is 0 (it inserts, or takes over an expired row, and on a
// live row returns it), and otherwise a bare UPDATE ... RETURNING, which
// costs the server no more than the simplest upsert. An UPDATE that finds
// no row with the expected version is followed by a SELECT ... FOR SHARE
// that returns the current row, read after any writer in flight has
// committed: a lost swap takes two round trips. While many swaps are lost
// (processes competing for the same keys: more than about one in nine of
// the store's recent swaps), the store sends the UPDATE and that SELECT as
// one statement instead, which returns the current row in the same round
// trip but costs the server about a fifth more for every swap; it goes
// back to the bare UPDATE as swaps are won again. Versions come from the
// table's identity sequence, so they never repeat, and grow across keys,
// Delete and expiry (for two rare exceptions, see Expiry).
// A conflict with expected 0 on a live row rewrites that row unchanged (it
// is how the statement reads a row committed after it started); every
// other conflict writes nothing.
//
// While every connection of the pool is busy with a CompareAndSwap of the
// store, further ones wait, and as soon as one ends, those waiting go out
// together: one round trip and one transaction, so one commit, for up to
// 64 of them. Each is the statement it would be alone (the UPDATE and the
// SELECT in their one-statement form); a transaction holds one call per
// key (a second call on a key goes alone), in the order of the keys, so
// that the transactions of any number of stores take row locks in one
// order and never deadlock each other. A statement of a batch waits at
// most 50 ms for a row lock. If the server refuses one of the statements
// (that wait among others), the transaction rolls back, the refused call
// is sent again alone, and the others together, once; if they are refused
// again, each goes alone. So only the refused call fails, or waits, on
// its own caller's context. A call waiting its turn whose context ends
// returns an error that matches the context's.
//
// # Expiry
//
// Each row stores its expiry, computed on the database server's clock
// (clock_timestamp() plus the time to live), and every statement compares
// it with that clock, so processes with skewed clocks agree on expiry.
// Each reply also carries that clock (storage.TimedStore), so that with
// limiter.WithStoreClock they agree on refills too. An expired row reads
// as absent at once. Delete expires the row at once (emptied, with its
// version kept, so that an insert that drew its version before the Delete
// meets the row and draws a greater one), and the sweep reclaims it like
// any expired row. Two rare cases can still give a key a version below one
// it had, though never one it had: an insert that stalls for more than a
// minute between drawing its version and looking for the row, while the
// row is written, expires or is deleted, and is swept; and processes of an
// earlier release sharing the table, whose Delete removes the row and
// whose insert takes an expired row over with the version it drew first.
//
// A background goroutine deletes the rows that expired (or were deleted)
// a minute ago or more, every minute (WithSweepInterval), walking the
// primary key in batches of 1000 rows per statement and skipping rows
// other clients hold, so it never takes long locks; Sweep runs it by
// hand. There is no index on
// expires_at (it would slow every write), so a sweep reads the whole
// table: with millions of keys, lengthen the interval. Deleted rows, like
// the old versions every update leaves, take space until VACUUM makes it
// reusable (it does not shrink the file; VACUUM FULL does, under a lock):
// autovacuum, on by default, does it; a server with autovacuum off needs
// VACUUM run on the table now and then, or the file grows with the churn
// of keys.
//
// # Errors
//
// A failure of the server or the network returns an error that names the
// operation and the key and wraps both storage.ErrUnavailable and pgx's
// error (errors.As finds *pgconn.PgError for server errors). A call whose
// context ends while it waits for the server fails the same way, and its
// error matches the context's error too: a write may or may not have
// landed then, and the driver never guesses which. A context that is done
// before the call returns its error as it is and sends nothing. After
// Close every method returns an error wrapping storage.ErrClosed.
//
// # Concurrency
//
// A Store is safe for concurrent use; any number of Stores, in any number
// of processes, may share one table: the row locks of PostgreSQL make
// every CompareAndSwap atomic. Close stops the background sweep; it never
// closes the pool, which belongs to the caller.
//
// # Performance
//
// Every write is part of a commit. With synchronous_commit on, PostgreSQL's
// default, a commit waits for the write-ahead log to reach the disk, and
// that flush bounds how fast one key can change. A pool used only for
// limits may set synchronous_commit=off (in the URL, or in pgx's
// RuntimeParams): a crash of the server may then lose the last fraction of
// a second of decisions, but never corrupts the table. It may also lose
// the version sequence's last advance, so that a version already returned
// to a process is handed out again after the restart: a process that
// cached it could then swap over a record it has not read. Restart the
// processes that use the store after such a crash. An UNLOGGED table
// needs no flush at all. The limiter decides many concurrent calls on one
// key with one statement, so a hot key costs fewer statements than
// decisions; and calls on many keys that find the pool busy share one
// commit (see Statements), so that under load a logged table flushes
// once per batch rather than once per decision.
//
// # Caveats
//
// The pool's connections must use READ COMMITTED, PostgreSQL's default:
// under a stronger default_transaction_isolation, concurrent writes to one
// key fail with serialization errors (returned wrapping
// storage.ErrUnavailable) instead of waiting for each other. Table names
// are quoted, so "Limits" and "limits" are different tables. A
// WithUnlogged table loses its rows in a crash; a logged one keeps them as
// PostgreSQL keeps any committed row. Versions come from the table's
// identity sequence, which New requires to be logged, with CACHE 1 and
// NO CYCLE: TRUNCATE ... RESTART IDENTITY, ALTER SEQUENCE ... RESTART,
// or dropping and creating the table again restart the versions, so that
// a version a running process holds may come to name a different record;
// empty the table with a plain TRUNCATE or DELETE, which keep the
// sequence, or stop every process first. Rows copied in without their
// sequence (a restore of the table alone, or a logical replica promoted:
// logical replication does not carry sequences) can hold versions the
// sequence has not reached: a row taken over after it expired then gets a
// version below one it had, breaking the rule that a key's versions only
// grow, on which exact limits rest. After such a copy, and before any
// process uses the table, advance the sequence past them:
//
//	SELECT setval(pg_get_serial_sequence('<table>', 'version'), (SELECT max(version) FROM <table>));
//
// Behind a connection pooler in
// transaction mode that does not track prepared statements (PgBouncer
// before 1.21), configure the pool with pgx.QueryExecModeExec or
// QueryExecModeSimpleProtocol instead of the default statement cache.
package postgres
