package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluice-go/sluice/internal/pipeline"
	"github.com/sluice-go/sluice/storage"
)

// defaultSweepInterval is the pause between two sweeps without
// WithSweepInterval.
const defaultSweepInterval = time.Minute

// sweepBatch is how many rows one sweep statement reads at most.
const sweepBatch = 1000

// sweepGrace is how long the sweep keeps a row after it expired (or a
// Delete expired it). An insert draws its version before it looks for the
// key's row; while the row is there, one that finds it draws again, above
// every version the row had. Only an insert that drew its version more
// than sweepGrace before the row expired could miss it, and go in below.
const sweepGrace = time.Minute

// Store is a storage.Store over one PostgreSQL table. It is safe for
// concurrent use; create it with New. It also implements
// storage.TimedStore: each reply carries the database server's time, for
// limiter.WithStoreClock.
type Store struct {
	pool   *pgxpool.Pool
	stmt   statements
	closed atomic.Bool

	// contention scores recent swaps: raised by lossWeight for each one
	// lost, lowered by one for each one won, never below 0 nor above
	// maxContention. While it is above 0, swaps are sent as one
	// statement that also returns the current record (see swap).
	contention atomic.Int32
	form       swapForm // tests pin one form

	// writes sends the compare-and-swaps: alone while the pool has
	// connections to spare, else together (see casBatch).
	writes *pipeline.Pipeliner[*casCall]

	closeOnce sync.Once
	stopSweep context.CancelFunc // nil when the sweep is disabled
	sweepDone chan struct{}
}

var (
	_ storage.Store      = (*Store)(nil)
	_ storage.TimedStore = (*Store)(nil)
)

// config collects what the options set.
type config struct {
	table         string
	unlogged      bool
	createTable   bool
	sweepInterval time.Duration
}

// Option configures a Store in New.
type Option func(*config)

// WithTable sets the table that holds the records: "table", found through
// the connection's search_path, or "schema.table". Each part must be an
// unquoted SQL identifier of at most 63 bytes (ASCII letters, digits and
// underscores, not starting with a digit); it is quoted in every
// statement, so its case is kept as given. The default is
// "sluice_records". Limiters with different names can share one table:
// their keys do not collide.
func WithTable(name string) Option {
	return func(c *config) { c.table = name }
}

// WithUnlogged makes New create the table UNLOGGED: writes skip the
// write-ahead log, which makes them faster, but the table is emptied after
// a crash of the database server (not after a clean restart) and is not
// copied to replicas, so every limit starts full again. It has no effect
// on a table that exists already. The default is a logged table.
func WithUnlogged() Option {
	return func(c *config) { c.unlogged = true }
}

// WithCreateTable says whether New creates the table when it is missing
// (CREATE TABLE IF NOT EXISTS, under an advisory lock, so that many
// processes may start at once). With false, the table must exist already,
// created by the DDL from Schema through the user's own migrations, and
// the pool's role needs no CREATE privilege. In both cases New checks the
// table's columns. The default is true.
func WithCreateTable(create bool) Option {
	return func(c *config) { c.createTable = create }
}

// WithSweepInterval sets the pause between two sweeps of the background
// goroutine that deletes rows expired for a minute or more (see Sweep), in
// batches of 1000. Zero means the default, one minute; a negative interval
// disables the background sweep (call Sweep yourself then, or expired rows
// are never reclaimed, though they still read as absent). Every process
// sweeps; sweeps of different processes skip rows the others hold and
// never wait for each other.
func WithSweepInterval(d time.Duration) Option {
	return func(c *config) { c.sweepInterval = d }
}

// New returns a Store that keeps its records in a table reached through
// pool. Unless WithCreateTable(false) is given it creates the table when
// missing; then it checks that the table has the expected columns, and
// returns an error naming the first one that is wrong. New starts the
// background sweep (see WithSweepInterval).
//
// The Store never closes pool: the caller does, after Close.
func New(ctx context.Context, pool *pgxpool.Pool, opts ...Option) (*Store, error) {
	if pool == nil {
		return nil, errors.New("postgres: nil pool")
	}
	cfg := config{table: defaultTable, createTable: true}
	for _, opt := range opts {
		if opt != nil { // a nil Option sets nothing, as in the other drivers
			opt(&cfg)
		}
	}
	quoted, err := quoteTable(cfg.table)
	if err != nil {
		return nil, err
	}
	if cfg.createTable {
		if err := createTable(ctx, pool, quoted, cfg.unlogged); err != nil {
			return nil, newError("create table", cfg.table, ctx, err)
		}
	}
	seq, err := verifyTable(ctx, pool, cfg.table, quoted)
	if err != nil {
		return nil, err
	}
	s := &Store{pool: pool, stmt: newStatements(quoted, seq)}
	s.writes = pipeline.New(int(pool.Config().MaxConns), maxBatch, s.casOne, s.casBatch)
	interval := cfg.sweepInterval
	if interval == 0 {
		interval = defaultSweepInterval
	}
	if interval > 0 {
		sweepCtx, cancel := context.WithCancel(context.Background())
		s.stopSweep = cancel
		s.sweepDone = make(chan struct{})
		go s.sweepLoop(sweepCtx, interval)
	}
	return s, nil
}

// Get returns the live record under key, or Version 0 when the key is
// absent or expired. It is one statement.
func (s *Store) Get(ctx context.Context, key string) (storage.Record, error) {
	rec, _, err := s.GetTimed(ctx, key)
	return rec, err
}

// GetTimed is Get, plus the database server's time at which it ran (see
// storage.TimedStore).
func (s *Store) GetTimed(ctx context.Context, key string) (storage.Record, time.Time, error) {
	if err := s.check(ctx, "get", key); err != nil {
		return storage.Record{}, time.Time{}, err
	}
	var (
		value   []byte
		version *int64
		now     time.Time
	)
	if err := s.pool.QueryRow(ctx, s.stmt.get, []byte(key)).Scan(&value, &version, &now); err != nil {
		return storage.Record{}, time.Time{}, newError("get", key, ctx, err)
	}
	if version == nil {
		return storage.Record{}, now, nil
	}
	v, err := checkVersion("get", key, *version)
	if err != nil {
		return storage.Record{}, time.Time{}, err
	}
	return storage.Record{Value: value, Version: v}, now, nil
}

// CompareAndSwap writes value under key iff the live record's version is
// expected (0: the key is absent or expired), with an expiry of ttl from
// now on the database server's clock. On conflict it returns the current
// record. It is one statement and one round trip when it swaps: an upsert
// when expected is 0, an update otherwise. A lost update takes a second
// statement to read the current record, unless many swaps were lost
// lately: then one statement does both. While the pool is busy, calls
// share round trips and commits (see the package documentation).
// New versions come from the table's identity sequence, so they never
// repeat for any key.
func (s *Store) CompareAndSwap(ctx context.Context, key string, expected uint64, value []byte, ttl time.Duration) (storage.Record, bool, error) {
	rec, swapped, _, err := s.CompareAndSwapTimed(ctx, key, expected, value, ttl)
	return rec, swapped, err
}

// CompareAndSwapTimed is CompareAndSwap, plus the database server's time
// just after the statement wrote or found the record (see
// storage.TimedStore).
func (s *Store) CompareAndSwapTimed(ctx context.Context, key string, expected uint64, value []byte, ttl time.Duration) (storage.Record, bool, time.Time, error) {
	if err := s.check(ctx, "cas", key); err != nil {
		return storage.Record{}, false, time.Time{}, err
	}
	// The call keeps a copy of value, never nil (nil would be sent as
	// NULL): a queued call may still be sent after its caller gave up and
	// returned, free to reuse value. That copy is also the Value returned
	// when the swap is made.
	c := &casCall{key: key, expected: expected, value: append([]byte{}, value...), micros: ttlMicros(ttl)}
	if err := s.writes.Do(ctx, c); err != nil {
		return storage.Record{}, false, time.Time{}, newError("cas", key, ctx, err)
	}
	if c.again {
		s.casOne(ctx, c)
	}
	return c.rec, c.swapped, c.now, c.err
}

// ttlMicros is ttl in whole microseconds, the unit of the statements,
// rounded up so that a record never lives less than it was asked to (and
// without overflow for the longest durations).
func ttlMicros(ttl time.Duration) int64 {
	micros := int64(ttl / time.Microsecond)
	if ttl%time.Microsecond > 0 {
		micros++
	}
	return micros
}

// insert is CompareAndSwap with expected 0.
func (s *Store) insert(ctx context.Context, key string, value []byte, micros int64) (storage.Record, bool, time.Time, error) {
	for attempt := 1; ; attempt++ {
		rec, swapped, stale, now, err, scanErr := readInsert(s.pool.QueryRow(ctx, s.stmt.insert, []byte(key), value, micros), key, value)
		if scanErr != nil {
			return storage.Record{}, false, time.Time{}, newError("cas", key, ctx, scanErr)
		}
		if !stale {
			return rec, swapped, now, err
		}
		if attempt == maxInsertAttempts {
			return storage.Record{}, false, now, nil // a conflict with the absent key
		}
	}
}

// maxInsertAttempts bounds how often insert is sent again after it met a
// row that had expired by the time it looked (see readInsert); the next
// attempt, which computes its instant afresh, takes such a row over.
const maxInsertAttempts = 3

// readInsert reads the row of the insert statement for key and value: the
// outcome of the compare-and-swap, or the error of the row's Scan. stale
// reports a conflict with a row that was live at the instant the statement
// computed its proposed row from but had expired (or been deleted) by the
// time it met it: the statement wrote nothing, and is to be sent again.
func readInsert(row pgx.Row, key string, value []byte) (rec storage.Record, swapped, stale bool, now time.Time, err, scanErr error) {
	var (
		version int64
		current []byte
		live    bool
	)
	if scanErr := row.Scan(&swapped, &version, &current, &live, &now); scanErr != nil {
		return storage.Record{}, false, false, time.Time{}, nil, scanErr
	}
	if !swapped && !live {
		return storage.Record{}, false, true, now, nil, nil
	}
	if !swapped {
		value = current
	}
	rec, swapped, now, err = casResult(key, &version, value, swapped, now)
	return rec, swapped, false, now, err, nil
}

// casResult is CompareAndSwap's outcome from the row a statement returned:
// version is the version stored (nil: the key is absent or expired, and
// nothing was swapped), and value the call's copy of the caller's when
// swapped, else the current one.
func casResult(key string, version *int64, value []byte, swapped bool, now time.Time) (storage.Record, bool, time.Time, error) {
	if version == nil {
		return storage.Record{}, false, now, nil
	}
	v, err := checkVersion("cas", key, *version)
	if err != nil {
		return storage.Record{}, false, time.Time{}, err
	}
	return storage.Record{Value: value, Version: v}, swapped, now, nil
}

// swapForm chooses how swap sends a compare-and-swap: as the scores of
// contention say, or always in one form (for tests).
type swapForm int

const (
	swapAdaptive swapForm = iota
	swapTwoStep
	swapCombined
)

// lossWeight and maxContention tune the choice between the forms of swap:
// the combined statement is used while more than about one swap in nine
// is lost, and for at least a few swaps after a loss.
const (
	lossWeight    = 8
	maxContention = 64
)

// swap is CompareAndSwap with an expected version other than 0. It has two
// forms. The two-step one sends a bare UPDATE, the cheapest statement that
// can swap (the upsert floor of the benchmarks costs the server as much),
// and only when it finds no row, a second statement that reads the
// current record. The combined one returns the current record in the same
// round trip, and costs the server about a fifth more for every swap.
// While few swaps are lost (one process per key, whose limiter batches
// its calls), the two-step form is used; while many are (processes
// competing for the same keys), the combined one.
func (s *Store) swap(ctx context.Context, key string, expected uint64, value []byte, micros int64) (storage.Record, bool, time.Time, error) {
	combined := s.form == swapCombined || s.form == swapAdaptive && s.contention.Load() > 0
	var (
		rec     storage.Record
		swapped bool
		now     time.Time
		err     error
	)
	if combined {
		rec, swapped, now, err = s.swapCombined(ctx, key, expected, value, micros)
	} else {
		rec, swapped, now, err = s.swapTwoStep(ctx, key, expected, value, micros)
	}
	if err == nil {
		s.score(swapped)
	}
	return rec, swapped, now, err
}

// score counts a swap won or lost towards the choice of swap's form.
func (s *Store) score(won bool) {
	for {
		c := s.contention.Load()
		next := c - 1
		if !won {
			next = min(c+lossWeight, maxContention)
		}
		if next < 0 || next == c || s.contention.CompareAndSwap(c, next) {
			return
		}
	}
}

// swapTwoStep is swap as an UPDATE, then, if it found no live row with
// the expected version, a read of the current record.
func (s *Store) swapTwoStep(ctx context.Context, key string, expected uint64, value []byte, micros int64) (storage.Record, bool, time.Time, error) {
	var (
		written int64
		now     time.Time
	)
	err := s.pool.QueryRow(ctx, s.stmt.update, []byte(key), int64(expected), value, micros).Scan(&written, &now)
	if errors.Is(err, pgx.ErrNoRows) {
		return s.current(ctx, key)
	}
	if err != nil {
		return storage.Record{}, false, time.Time{}, newError("cas", key, ctx, err)
	}
	return casResult(key, &written, value, true, now)
}

// current reads the current record of key after a lost update. Nothing
// was written, but the error of a failed read still wraps
// storage.ErrUnavailable like every other.
func (s *Store) current(ctx context.Context, key string) (storage.Record, bool, time.Time, error) {
	var (
		version *int64
		value   []byte
		now     time.Time
	)
	if err := s.pool.QueryRow(ctx, s.stmt.current, []byte(key)).Scan(&version, &value, &now); err != nil {
		return storage.Record{}, false, time.Time{}, newError("cas", key, ctx, err)
	}
	return casResult(key, version, value, false, now)
}

// swapCombined is swap as one statement that also returns the current
// record when it does not swap.
func (s *Store) swapCombined(ctx context.Context, key string, expected uint64, value []byte, micros int64) (storage.Record, bool, time.Time, error) {
	rec, swapped, now, err, scanErr := readSwap(s.pool.QueryRow(ctx, s.stmt.swap, []byte(key), int64(expected), value, micros), key, value)
	if scanErr != nil {
		return storage.Record{}, false, time.Time{}, newError("cas", key, ctx, scanErr)
	}
	return rec, swapped, now, err
}

// readSwap reads the row of the swap statement for key and value: the
// outcome of the compare-and-swap, or the error of the row's Scan.
func readSwap(row pgx.Row, key string, value []byte) (rec storage.Record, swapped bool, now time.Time, err, scanErr error) {
	var (
		written, version *int64
		current          []byte
	)
	if scanErr := row.Scan(&written, &version, &current, &now); scanErr != nil {
		return storage.Record{}, false, time.Time{}, nil, scanErr
	}
	if written != nil {
		rec, swapped, now, err = casResult(key, written, value, true, now)
	} else {
		rec, swapped, now, err = casResult(key, version, current, false, now)
	}
	return rec, swapped, now, err, nil
}

// maxBatch bounds the compare-and-swaps sent together in one transaction;
// more wait for the next.
const maxBatch = 64

// casCall is one compare-and-swap on its way to the server, and then its
// outcome.
type casCall struct {
	key      string
	expected uint64
	value    []byte // not nil
	micros   int64

	rec     storage.Record
	swapped bool
	now     time.Time
	err     error
	// again: the call's transaction rolled back, and the caller sends it
	// again alone, so that its wait holds up no other call.
	again bool
}

// casOne sends c alone, in the form that CompareAndSwap's documentation
// describes, and sets its outcome.
func (s *Store) casOne(ctx context.Context, c *casCall) {
	if c.expected == 0 {
		c.rec, c.swapped, c.now, c.err = s.insert(ctx, c.key, c.value, c.micros)
	} else {
		c.rec, c.swapped, c.now, c.err = s.swap(ctx, c.key, c.expected, c.value, c.micros)
	}
}

// batchLockTimeout bounds how long a statement of a batch waits for a row
// lock. A row held longer (by a long transaction elsewhere) would hold up
// every call of the batch, on free keys too: past it, the statement fails,
// the batch rolls back, and the blocked call waits alone.
const batchLockTimeout = "50ms"

// casBatch sends calls together, as one transaction in one round trip
// (see casTransaction), and sets the outcome of each, or leaves it to its
// caller to send again alone (casCall.again). The transaction holds at
// most one call per key, so that no row is locked twice by one transaction
// (a lost swap's shared lock, then a won swap's exclusive one, could
// deadlock with another transaction doing the same): a second call on a
// key, which two limiters sharing the store can make, goes alone.
func (s *Store) casBatch(ctx context.Context, calls []*casCall) {
	slices.SortStableFunc(calls, func(a, b *casCall) int { return strings.Compare(a.key, b.key) })
	first := make([]*casCall, 0, len(calls))
	for i, c := range calls {
		if i > 0 && c.key == calls[i-1].key {
			c.again = true
		} else {
			first = append(first, c)
		}
	}
	s.casTransaction(ctx, first, true)
}

// casTransaction sends calls, on distinct keys in the order of their keys,
// as one transaction in one round trip, and sets the outcome of each. Each
// is the statement it would be alone in its one-statement form (insert, or
// the combined swap), and reads and writes as it would alone; but the
// transaction commits once for all, so that a logged table flushes its
// write-ahead log once per batch rather than once per call. Taking row
// locks in the order of their keys, transactions of any number of stores
// never deadlock each other. A single call is left to its caller.
//
// Outcomes are known only once the transaction commits. If the server
// refuses a statement (a lock wait past batchLockTimeout among others),
// the whole transaction rolls back: nothing was written. The refused call
// is left to its caller to send again alone, on the caller's own context,
// and the others are sent again together, once (retry): if that
// transaction is refused too, or the refusal came at commit, every call
// is left to its caller, so that a batch costs at most two lock waits.
// Any other failure (the connection, the deadline) is each call's error:
// a write may or may not have landed.
func (s *Store) casTransaction(ctx context.Context, calls []*casCall, retry bool) {
	if len(calls) == 1 {
		calls[0].again = true
		return
	}
	var batch pgx.Batch
	batch.Queue("SELECT set_config('lock_timeout', '" + batchLockTimeout + "', true)")
	for _, c := range calls {
		// A stale insert of a transaction that rolled back was marked
		// again; this transaction decides anew whether it is.
		c.again = false
		if c.expected == 0 {
			batch.Queue(s.stmt.insert, []byte(c.key), c.value, c.micros)
		} else {
			batch.Queue(s.stmt.swap, []byte(c.key), int64(c.expected), c.value, c.micros)
		}
	}
	results := s.pool.SendBatch(ctx, &batch)
	_, err := results.Exec()
	refused := -1 // the call whose statement failed
	for i := 0; err == nil && i < len(calls); i++ {
		c := calls[i]
		if c.expected == 0 {
			var stale bool
			c.rec, c.swapped, stale, c.now, c.err, err = readInsert(results.QueryRow(), c.key, c.value)
			c.again = stale // sent again alone, once the batch is done
		} else {
			c.rec, c.swapped, c.now, c.err, err = readSwap(results.QueryRow(), c.key, c.value)
		}
		if err != nil {
			refused = i
		}
	}
	if closeErr := results.Close(); err == nil {
		err = closeErr
	}
	switch {
	case err == nil:
		for _, c := range calls {
			if c.expected != 0 && c.err == nil {
				s.score(c.swapped)
			}
		}
	case rolledBack(err) && ctx.Err() == nil:
		if refused < 0 || !retry { // refused at commit, or again
			for _, c := range calls {
				c.again = true
			}
			return
		}
		calls[refused].again = true
		s.casTransaction(ctx, slices.Delete(calls, refused, refused+1), false)
	default:
		for _, c := range calls {
			c.rec, c.swapped, c.now, c.err = storage.Record{}, false, time.Time{}, newError("cas", c.key, ctx, err)
		}
	}
}

// rolledBack reports whether err is the server refusing a statement with
// the connection still up, so that its transaction rolled back: an ERROR,
// not a FATAL or PANIC, which end the session and may come after a commit.
func rolledBack(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	severity := pgErr.SeverityUnlocalized // the server's own word, since PostgreSQL 9.6
	if severity == "" {
		severity = pgErr.Severity
	}
	return severity == "ERROR"
}

// Delete removes key; an absent key is not an error. It is one statement,
// which expires the row at once and leaves it for the sweep (see the
// package documentation).
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := s.check(ctx, "delete", key); err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, s.stmt.del, []byte(key)); err != nil {
		return newError("delete", key, ctx, err)
	}
	return nil
}

// Close stops the background sweep and waits for it to return; later calls
// return an error wrapping storage.ErrClosed. It never closes the pool
// handed to New. Close is idempotent and always returns nil.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		if s.stopSweep != nil {
			s.stopSweep()
			<-s.sweepDone
		}
	})
	return nil
}

// check returns the error for a call that must not reach the server: the
// store is closed or ctx is done already.
func (s *Store) check(ctx context.Context, op, key string) error {
	if s.closed.Load() {
		return fmt.Errorf("%s: %w", prefix(op, key), storage.ErrClosed)
	}
	return ctx.Err()
}

// checkVersion converts a version read from the table; one that is not
// positive was not written by sluice.
func checkVersion(op, key string, v int64) (uint64, error) {
	if v <= 0 {
		return 0, fmt.Errorf("%s: version %d: %w", prefix(op, key), v, storage.ErrCorrupt)
	}
	return uint64(v), nil
}

// newError wraps a failure of pgx or the server for operation op on key:
// it wraps storage.ErrUnavailable and the native cause, so that errors.Is
// finds the sentinel and errors.As finds *pgconn.PgError. When ctx ended
// during the call (the server did not answer in time; a write may or may
// not have landed), errors.Is finds the context's error too.
func newError(op, key string, ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
		return fmt.Errorf("%s: %w: %w (%w)", prefix(op, key), storage.ErrUnavailable, err, ctxErr)
	}
	return fmt.Errorf("%s: %w: %w", prefix(op, key), storage.ErrUnavailable, err)
}

// prefix starts every error message: the driver, the operation and the
// key, if the operation has one.
func prefix(op, key string) string {
	if key == "" {
		return "postgres: " + op
	}
	return fmt.Sprintf("postgres: %s %q", op, key)
}
