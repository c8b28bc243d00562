package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	neturl "net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluice-go/sluice/conformance"
	"github.com/sluice-go/sluice/internal/testbackend"
	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/postgres"
)

func TestMain(m *testing.M) {
	if runChild() {
		return
	}
	testbackend.Main(m)
}

// tables remembers the tests whose table the factory has made, so that a
// second call with the same tb opens another handle on that table.
var tables sync.Map // testing.TB -> struct{}

// newStore is the conformance factory: a Store over a table of its own in
// the shared test database, named after testbackend.Namespace(tb) and
// dropped when tb ends. A second call with the same tb returns a second
// Store, with its own pool, over the same table.
func newStore(tb testing.TB) storage.Store {
	tb.Helper()
	return openStore(tb, testbackend.PostgresURL(tb))
}

// openStore returns a Store over tb's own table in the database at url,
// through a new pool; the table is dropped when tb ends.
func openStore(tb testing.TB, url string, opts ...postgres.Option) *postgres.Store {
	tb.Helper()
	table := testbackend.Namespace(tb)
	if _, seen := tables.LoadOrStore(tb, struct{}{}); !seen {
		tb.Cleanup(func() { dropTable(tb, url, table) })
	}
	return storeOn(tb, newPool(tb, url, 0), opts...)
}

// storeOn returns a Store through pool over tb's own table, which the
// caller drops.
func storeOn(tb testing.TB, pool *pgxpool.Pool, opts ...postgres.Option) *postgres.Store {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := postgres.New(ctx, pool, append([]postgres.Option{postgres.WithTable(testbackend.Namespace(tb))}, opts...)...)
	if err != nil {
		tb.Fatalf("postgres.New: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// newPool returns a pool on url, with at most maxConns connections (0:
// pgx's default), closed when tb ends.
func newPool(tb testing.TB, url string, maxConns int32) *pgxpool.Pool {
	tb.Helper()
	return newPoolWith(tb, url, maxConns, false)
}

// newPoolWith is newPool, with durable commits if asked.
func newPoolWith(tb testing.TB, url string, maxConns int32, durable bool) *pgxpool.Pool {
	tb.Helper()
	pool, err := openPool(url, maxConns, durable)
	if err != nil {
		tb.Fatalf("pgxpool: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// openPool returns a pool on url with at most maxConns connections (0:
// pgx's default). Unless durable, commits do not wait for the disk.
func openPool(url string, maxConns int32, durable bool) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	if !durable {
		// Durability is not under test, and waiting for each commit to
		// reach the disk would make the contended checks take minutes.
		cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	}
	return pgxpool.NewWithConfig(context.Background(), cfg)
}

// dropTable drops one of the test's own tables, never another.
func dropTable(tb testing.TB, url, table string) {
	tb.Helper()
	execSQL(tb, url, "DROP TABLE IF EXISTS "+pgx.Identifier{table}.Sanitize())
}

// execSQL runs statements on a connection of its own.
func execSQL(tb testing.TB, url string, stmts ...string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	for _, stmt := range stmts {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			tb.Fatalf("%s: %v", stmt, err)
		}
	}
}

func TestConformance(t *testing.T) {
	conformance.RunStore(t, newStore)
	conformance.RunLimiter(t, newStore)
}

// Each form of a compare-and-swap with an expected version (see
// Store.swap) keeps the contract on its own: the adaptive store above
// switches between them only as contention comes and goes.
func TestConformanceOfEachSwapForm(t *testing.T) {
	for _, combined := range []bool{false, true} {
		t.Run(fmt.Sprintf("combined=%t", combined), func(t *testing.T) {
			pinned := func(tb testing.TB) storage.Store {
				tb.Helper()
				s := openStore(tb, testbackend.PostgresURL(tb))
				postgres.PinSwapForm(s, combined)
				return s
			}
			conformance.RunStore(t, pinned)
			conformance.RunLimiter(t, pinned)
		})
	}
}

// The package doc advises pgx's Exec or simple-protocol query modes behind
// a pooler that does not track prepared statements: the statements keep
// the contract in both.
func TestConformanceInQueryExecModes(t *testing.T) {
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol} {
		t.Run(mode.String(), func(t *testing.T) {
			inMode := func(tb testing.TB) storage.Store {
				tb.Helper()
				url := testbackend.PostgresURL(tb)
				table := testbackend.Namespace(tb)
				if _, seen := tables.LoadOrStore(tb, struct{}{}); !seen {
					tb.Cleanup(func() { dropTable(tb, url, table) })
				}
				cfg, err := pgxpool.ParseConfig(url)
				if err != nil {
					tb.Fatal(err)
				}
				cfg.ConnConfig.DefaultQueryExecMode = mode
				cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
				pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
				if err != nil {
					tb.Fatal(err)
				}
				tb.Cleanup(pool.Close)
				return storeOn(tb, pool)
			}
			conformance.RunStore(t, inMode)
		})
	}
}

func BenchmarkConformance(b *testing.B) {
	conformance.RunBenchmarks(b, newStore)
}

// What follows is special to the PostgreSQL driver.

// queryInt runs a query that returns one integer.
func queryInt(tb testing.TB, pool *pgxpool.Pool, query string, args ...any) int64 {
	tb.Helper()
	var n int64
	if err := pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", query, err)
	}
	return n
}

func TestNewConcurrentlyOnFreshTable(t *testing.T) {
	url := testbackend.PostgresURL(t)
	table := testbackend.Namespace(t)
	t.Cleanup(func() { dropTable(t, url, table) })
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	stores := make([]*postgres.Store, n)
	start := make(chan struct{})
	for i := range n {
		pool := newPool(t, url, 2)
		wg.Go(func() {
			<-start
			stores[i], errs[i] = postgres.New(t.Context(), pool, postgres.WithTable(table))
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("New %d of %d at once: %v", i+1, n, err)
		}
		defer stores[i].Close()
	}
	rec, swapped, err := stores[0].CompareAndSwap(t.Context(), "k", 0, []byte("v"), time.Minute)
	if err != nil || !swapped {
		t.Fatalf("CompareAndSwap through the first store = %v, %t, %v", rec, swapped, err)
	}
	for i, s := range stores {
		got, err := s.Get(t.Context(), "k")
		if err != nil || got.Version != rec.Version || string(got.Value) != "v" {
			t.Errorf("Get through store %d = %+v, %v; want %+v", i+1, got, err, rec)
		}
	}
	// And once more, now that the table exists.
	s, err := postgres.New(t.Context(), newPool(t, url, 1), postgres.WithTable(table))
	if err != nil {
		t.Fatalf("New over the existing table: %v", err)
	}
	s.Close()
}

func TestNewRejectsInvalidTableNames(t *testing.T) {
	pool := newPool(t, testbackend.PostgresURL(t), 1)
	for _, name := range []string{
		"", ".", "a.", ".a", "a.b.c", "1abc", "a-b", "a b", `a"b`, "a;b", "a'b", "ключ",
		"a.b;DROP TABLE x", strings.Repeat("a", 64), "s." + strings.Repeat("a", 64),
	} {
		s, err := postgres.New(t.Context(), pool, postgres.WithTable(name))
		if err == nil {
			s.Close()
			t.Errorf("New(WithTable(%q)) succeeded, want an error", name)
			continue
		}
		if !strings.Contains(err.Error(), "invalid table name") {
			t.Errorf("New(WithTable(%q)) = %v, want an error saying the table name is invalid", name, err)
		}
		if _, err := postgres.Schema(name, false); err == nil {
			t.Errorf("Schema(%q) succeeded, want an error", name)
		}
	}
}

func TestNewNamesTheWrongColumn(t *testing.T) {
	url := testbackend.PostgresURL(t)
	pool := newPool(t, url, 2)
	for i, c := range []struct {
		columns string // the table's definition
		want    string // in the error
	}{
		{`(key text PRIMARY KEY, value bytea NOT NULL, version bigint GENERATED BY DEFAULT AS IDENTITY, expires_at timestamptz NOT NULL)`,
			`column "key" has type text, want bytea`},
		{`(key bytea PRIMARY KEY, version bigint GENERATED BY DEFAULT AS IDENTITY, expires_at timestamptz NOT NULL)`,
			`missing column "value"`},
		{`(key bytea PRIMARY KEY, value bytea NOT NULL, version integer GENERATED BY DEFAULT AS IDENTITY, expires_at timestamptz NOT NULL)`,
			`column "version" has type integer, want bigint`},
		{`(key bytea PRIMARY KEY, value bytea NOT NULL, version bigint NOT NULL, expires_at timestamptz NOT NULL)`,
			`column "version" needs a sequence default`},
		{`(key bytea PRIMARY KEY, value bytea NOT NULL, version bigint GENERATED BY DEFAULT AS IDENTITY, expires_at timestamp NOT NULL)`,
			`column "expires_at" has type timestamp without time zone, want timestamp with time zone`},
		{`(key bytea NOT NULL, value bytea NOT NULL, version bigint GENERATED BY DEFAULT AS IDENTITY, expires_at timestamptz NOT NULL)`,
			`column "key" is not the primary key`},
		{`(key bytea PRIMARY KEY, value bytea NOT NULL, version bigint GENERATED BY DEFAULT AS IDENTITY, expires_at timestamptz NOT NULL, owner text NOT NULL)`,
			`extra column "owner" is NOT NULL without a default`},
		// ON CONFLICT cannot use a DEFERRABLE key: every insert would fail.
		{`(key bytea PRIMARY KEY DEFERRABLE, value bytea NOT NULL, version bigint GENERATED BY DEFAULT AS IDENTITY, expires_at timestamptz NOT NULL)`,
			`has a DEFERRABLE unique index or primary key`},
		// Nor when an immediate unique index on key comes with it: ON
		// CONFLICT (key) takes every unique index on key as its arbiter.
		{`(key bytea PRIMARY KEY DEFERRABLE UNIQUE, value bytea NOT NULL, version bigint GENERATED BY DEFAULT AS IDENTITY, expires_at timestamptz NOT NULL)`,
			`has a DEFERRABLE unique index or primary key`},
		// A NULL value would read as a record, a NULL expiry fail every
		// insert on the key.
		{`(key bytea PRIMARY KEY, value bytea, version bigint GENERATED BY DEFAULT AS IDENTITY, expires_at timestamptz NOT NULL)`,
			`column "value" allows NULL`},
		{`(key bytea PRIMARY KEY, value bytea NOT NULL, version bigint GENERATED BY DEFAULT AS IDENTITY, expires_at timestamptz)`,
			`column "expires_at" allows NULL`},
	} {
		table := fmt.Sprintf("%s_%d", testbackend.Namespace(t), i)
		t.Cleanup(func() { dropTable(t, url, table) })
		execSQL(t, url, "CREATE TABLE "+pgx.Identifier{table}.Sanitize()+" "+c.columns)
		for _, create := range []bool{true, false} {
			s, err := postgres.New(t.Context(), pool, postgres.WithTable(table), postgres.WithCreateTable(create))
			if err == nil {
				s.Close()
				t.Errorf("New over %s succeeded, want an error containing %q", c.columns, c.want)
				continue
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("New over %s = %v, want an error containing %q", c.columns, err, c.want)
			}
		}
	}
	// An extra column with a default is fine.
	extra := testbackend.Namespace(t) + "_extra"
	t.Cleanup(func() { dropTable(t, url, extra) })
	execSQL(t, url, "CREATE TABLE "+pgx.Identifier{extra}.Sanitize()+
		` (key bytea PRIMARY KEY, value bytea NOT NULL, version bigint GENERATED BY DEFAULT AS IDENTITY, expires_at timestamptz NOT NULL, note text NOT NULL DEFAULT '')`)
	s, err := postgres.New(t.Context(), pool, postgres.WithTable(extra))
	if err != nil {
		t.Fatalf("New over a table with an extra column that has a default: %v", err)
	}
	s.Close()
	// So is a key that is unique but not the primary key, and may be NULL
	// (sluice never writes a NULL key).
	unique := testbackend.Namespace(t) + "_unique"
	t.Cleanup(func() { dropTable(t, url, unique) })
	execSQL(t, url, "CREATE TABLE "+pgx.Identifier{unique}.Sanitize()+
		` (key bytea UNIQUE, value bytea NOT NULL, version bigint GENERATED BY DEFAULT AS IDENTITY, expires_at timestamptz NOT NULL)`)
	s, err = postgres.New(t.Context(), pool, postgres.WithTable(unique))
	if err != nil {
		t.Fatalf("New over a table whose key is UNIQUE and not the primary key: %v", err)
	}
	if _, swapped, err := s.CompareAndSwap(t.Context(), "k", 0, []byte("v"), time.Minute); err != nil || !swapped {
		t.Errorf("insert into a table whose key is UNIQUE: %t, %v; want a swap", swapped, err)
	}
	s.Close()
}

func TestSchemaForMigrations(t *testing.T) {
	url := testbackend.PostgresURL(t)
	pool := newPool(t, url, 2)
	table := testbackend.Namespace(t)
	t.Cleanup(func() { dropTable(t, url, table) })

	s, err := postgres.New(t.Context(), pool, postgres.WithTable(table), postgres.WithCreateTable(false))
	if err == nil {
		s.Close()
		t.Fatal("New with WithCreateTable(false) and no table succeeded, want an error")
	}
	if !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("New with WithCreateTable(false) and no table = %v, want an error saying the table does not exist", err)
	}
	for _, unlogged := range []bool{false, true} {
		ddl, err := postgres.Schema(table, unlogged)
		if err != nil {
			t.Fatalf("Schema: %v", err)
		}
		execSQL(t, url, ddl, ddl) // idempotent
	}
	s, err = postgres.New(t.Context(), pool, postgres.WithTable(table), postgres.WithCreateTable(false))
	if err != nil {
		t.Fatalf("New over the table made from Schema: %v", err)
	}
	defer s.Close()
	if _, swapped, err := s.CompareAndSwap(t.Context(), "k", 0, []byte("v"), time.Minute); err != nil || !swapped {
		t.Fatalf("CompareAndSwap = %t, %v", swapped, err)
	}
}

func TestNewWithoutCreatePrivilege(t *testing.T) {
	url := testbackend.PostgresURL(t)
	// The table lives in a schema of its own, where the application's role
	// gets USAGE but not CREATE: before PostgreSQL 15 every role may create
	// tables in public, so the current schema would prove nothing there.
	schema := testbackend.Namespace(t)
	quotedSchema := pgx.Identifier{schema}.Sanitize()
	execSQL(t, url, "CREATE SCHEMA "+quotedSchema)
	t.Cleanup(func() { execSQL(t, url, "DROP SCHEMA IF EXISTS "+quotedSchema+" CASCADE") })
	name := schema + ".limits"
	admin := newPool(t, url, 1)
	owner, err := postgres.New(t.Context(), admin, postgres.WithTable(name)) // made by the test's own role
	if err != nil {
		t.Fatal(err)
	}
	owner.Close()
	table := quotedSchema + ".limits"
	role := schema + "_app"
	pool := newPool(t, roleURL(t, url, role, quotedSchema, table, "SELECT, INSERT, UPDATE, DELETE"), 1)
	var canCreate bool
	if err := pool.QueryRow(t.Context(), "SELECT has_schema_privilege($1, 'CREATE')", schema).Scan(&canCreate); err != nil {
		t.Fatal(err)
	}
	if canCreate {
		t.Fatalf("role %s may create tables in schema %s: the test proves nothing", role, schema)
	}
	s, err := postgres.New(t.Context(), pool, postgres.WithTable(name))
	if err != nil {
		t.Fatalf("New by a role that may use the table but not create tables: %v", err)
	}
	defer s.Close()
	if _, swapped, err := s.CompareAndSwap(t.Context(), "k", 0, []byte("v"), time.Minute); err != nil || !swapped {
		t.Fatalf("CompareAndSwap = %t, %v", swapped, err)
	}
}

func TestSchemaQualifiedTable(t *testing.T) {
	url := testbackend.PostgresURL(t)
	schema := testbackend.Namespace(t)
	execSQL(t, url, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize())
	t.Cleanup(func() { execSQL(t, url, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE") })
	pool := newPool(t, url, 2)
	s, err := postgres.New(t.Context(), pool, postgres.WithTable(schema+".Limits"))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer s.Close()
	if _, swapped, err := s.CompareAndSwap(t.Context(), "k", 0, []byte("v"), time.Minute); err != nil || !swapped {
		t.Fatalf("CompareAndSwap = %t, %v", swapped, err)
	}
	if got := queryInt(t, pool, `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = 'Limits' AND c.relkind = 'r'`, schema); got != 1 {
		t.Errorf("tables %s.\"Limits\" = %d, want 1 (the name is quoted, case kept)", schema, got)
	}
}

func TestUnlogged(t *testing.T) {
	url := testbackend.PostgresURL(t)
	s := openStore(t, url, postgres.WithUnlogged())
	pool := newPool(t, url, 1)
	table := pgx.Identifier{testbackend.Namespace(t)}.Sanitize()
	var table_, seq string
	err := pool.QueryRow(t.Context(), `SELECT c.relpersistence::text, s.relpersistence::text
		FROM pg_class c, pg_class s
		WHERE c.oid = $1::text::regclass AND s.oid = pg_get_serial_sequence($1::text, 'version')::regclass`, table).Scan(&table_, &seq)
	if err != nil {
		t.Fatal(err)
	}
	if table_ != "u" {
		t.Errorf("relpersistence of the table = %q, want u (unlogged)", table_)
	}
	if seq != "p" {
		t.Errorf("relpersistence of its version sequence = %q, want p (logged, so that versions never repeat after a crash)", seq)
	}
	if _, swapped, err := s.CompareAndSwap(t.Context(), "k", 0, []byte("v"), time.Minute); err != nil || !swapped {
		t.Fatalf("CompareAndSwap = %t, %v", swapped, err)
	}
}

func TestAwkwardKeysRoundTrip(t *testing.T) {
	s := openStore(t, testbackend.PostgresURL(t))
	keys := []string{
		`'`, `''`, `"`, `\`, `\\`, `\x00`, `'; DROP TABLE x; --`, `$1`, `E'\n'`,
		"ключ", "键", "🚦", "e\u0301", "\u00e9", "\xff\xfe", "\x01\x02",
		strings.Repeat("k", 1024), strings.Repeat("é", 512), strings.Repeat("k", storage.MaxKeyLen),
	}
	recs := make([]storage.Record, len(keys))
	for i, k := range keys {
		rec, swapped, err := s.CompareAndSwap(t.Context(), k, 0, []byte(k), time.Minute)
		if err != nil || !swapped {
			t.Fatalf("CompareAndSwap(%q) = %t, %v", k, swapped, err)
		}
		recs[i] = rec
	}
	for i, k := range keys {
		got, err := s.Get(t.Context(), k)
		if err != nil || got.Version != recs[i].Version || string(got.Value) != k {
			t.Errorf("Get(%q) = %+v, %v; want %+v", k, got, err, recs[i])
		}
	}
}

func TestSweepDeletesExpiredRowsInBatches(t *testing.T) {
	url := testbackend.PostgresURL(t)
	s := openStore(t, url, postgres.WithSweepInterval(-1))
	pool := newPool(t, url, 2)
	table := pgx.Identifier{testbackend.Namespace(t)}.Sanitize()
	// 2500 expired rows: three batches' worth, written directly.
	execSQL(t, url, `INSERT INTO `+table+` (key, value, expires_at)
		SELECT convert_to('expired' || g, 'UTF8'), '\x00', clock_timestamp() - interval '2 minutes' FROM generate_series(1, 2500) g`)
	for i := range 10 {
		if _, _, err := s.CompareAndSwap(t.Context(), fmt.Sprintf("live%d", i), 0, []byte("v"), time.Hour); err != nil {
			t.Fatal(err)
		}
	}

	// A row another client holds is skipped, not waited for.
	tx, err := pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(t.Context(), `SELECT FROM `+table+` WHERE key = 'expired7' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	deleted, err := s.Sweep(ctx)
	if err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if deleted != 2499 {
		t.Errorf("Sweep deleted %d rows, want 2499 (2500 expired, one of them locked)", deleted)
	}
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	if deleted, err = s.Sweep(ctx); err != nil || deleted != 1 {
		t.Errorf("second Sweep = %d, %v; want 1, the row that was locked", deleted, err)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM `+table); n != 10 {
		t.Errorf("rows left = %d, want the 10 live ones", n)
	}
	if deleted, err = s.Sweep(ctx); err != nil || deleted != 0 {
		t.Errorf("third Sweep = %d, %v; want 0", deleted, err)
	}
}

func TestBackgroundSweep(t *testing.T) {
	url := testbackend.PostgresURL(t)
	s := openStore(t, url, postgres.WithSweepInterval(20*time.Millisecond))
	pool := newPool(t, url, 1)
	table := pgx.Identifier{testbackend.Namespace(t)}.Sanitize()
	execSQL(t, url, `INSERT INTO `+table+` (key, value, expires_at)
		SELECT convert_to('expired' || g, 'UTF8'), '', clock_timestamp() - interval '2 minutes' FROM generate_series(1, 1500) g`)
	if _, _, err := s.CompareAndSwap(t.Context(), "live", 0, []byte("v"), time.Hour); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for queryInt(t, pool, `SELECT count(*) FROM `+table) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the background sweep did not delete the expired rows within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Close()
	if _, err := s.Sweep(t.Context()); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Sweep after Close = %v, want storage.ErrClosed", err)
	}
}

// TestConflictReturnsNewestRow: while another client's write to the row
// is in flight, a swap waits for it and then returns the row committed,
// not the version its snapshot saw. A swap that expects the version it
// saw waits on the row's lock; one that expects a stale version loses at
// once, and its read of the current row waits instead.
func TestConflictReturnsNewestRow(t *testing.T) {
	for _, combined := range []bool{false, true} {
		for _, stale := range []bool{false, true} {
			t.Run(fmt.Sprintf("combined=%t/stale=%t", combined, stale), func(t *testing.T) {
				testConflictReturnsNewestRow(t, combined, stale)
			})
		}
	}
}

func testConflictReturnsNewestRow(t *testing.T, combined, stale bool) {
	url := testbackend.PostgresURL(t)
	s := openStore(t, url)
	postgres.PinSwapForm(s, combined)
	table := pgx.Identifier{testbackend.Namespace(t)}.Sanitize()
	first, _, err := s.CompareAndSwap(t.Context(), "k", 0, []byte("first"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	expected := first.Version
	if stale {
		expected += 1_000_000
	}
	// Another client changes the row and commits while the swap waits for
	// its lock.
	tx := otherClient(t, url)
	var newer int64
	if err := tx.QueryRow(t.Context(), `UPDATE `+table+` SET version = DEFAULT, value = 'other' WHERE key = 'k' RETURNING version`).Scan(&newer); err != nil {
		t.Fatal(err)
	}
	holder := backendPID(t, tx)
	done := swapInBackground(t.Context(), s, "k", expected, []byte("mine"))
	// Commit only once the swap waits for the row's lock: committing
	// earlier would test nothing.
	waitUntilBlocked(t, url, holder, "the swap never waited for the row's lock", func() {
		select {
		case got := <-done:
			t.Fatalf("CompareAndSwap(expected %d) = %+v, %t, %v while a write was in flight; want it to wait for the write's lock", expected, got.rec, got.swapped, got.err)
		default:
		}
	})
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	got := <-done
	if got.err != nil || got.swapped || got.rec.Version != uint64(newer) || string(got.rec.Value) != "other" {
		t.Errorf("CompareAndSwap(expected %d) = %+v, %t, %v; want the row committed meanwhile (Version %d, Value \"other\"), not swapped",
			expected, got.rec, got.swapped, got.err, newer)
	}
}

func TestErrorsWrapSentinelAndCause(t *testing.T) {
	url := testbackend.PostgresURL(t)
	s := openStore(t, url)
	dropTable(t, url, testbackend.Namespace(t))
	_, _, err := s.CompareAndSwap(t.Context(), "k", 0, []byte("v"), time.Minute)
	var pgErr *pgconn.PgError
	if !errors.Is(err, storage.ErrUnavailable) || !errors.As(err, &pgErr) || pgErr.Code != "42P01" {
		t.Fatalf("CompareAndSwap on a dropped table = %v, want an error wrapping storage.ErrUnavailable and the server's undefined_table", err)
	}
	if !strings.HasPrefix(err.Error(), `postgres: cas "k": `) {
		t.Errorf("error %q does not start with the driver, operation and key", err)
	}
	swapIn := func(combined bool) func() error {
		return func() error {
			postgres.PinSwapForm(s, combined)
			_, _, err := s.CompareAndSwap(t.Context(), "k", 7, []byte("v"), time.Minute)
			return err
		}
	}
	for _, call := range []func() error{
		func() error { _, err := s.Get(t.Context(), "k"); return err },
		func() error { return s.Delete(t.Context(), "k") },
		swapIn(false),
		swapIn(true),
	} {
		if err := call(); !errors.Is(err, storage.ErrUnavailable) || !errors.As(err, &pgErr) {
			t.Errorf("got %v, want an error wrapping storage.ErrUnavailable and *pgconn.PgError", err)
		}
	}
}

func TestNewNeverClosesThePool(t *testing.T) {
	url := testbackend.PostgresURL(t)
	pool := newPool(t, url, 1)
	table := testbackend.Namespace(t)
	t.Cleanup(func() { dropTable(t, url, table) })
	s, err := postgres.New(t.Context(), pool, nil, postgres.WithTable(table)) // a nil option is ignored
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := pool.Ping(t.Context()); err != nil {
		t.Errorf("pool after Close: %v", err)
	}
	if _, err := s.Get(t.Context(), "k"); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Get after Close = %v, want storage.ErrClosed", err)
	}
}

// The score that chooses the form of a swap rises with each swap lost and
// falls back with the swaps won, so a store shared by competing processes
// sends the combined statement, and one that is not sends the bare update.
func TestSwapFormFollowsContention(t *testing.T) {
	s := openStore(t, testbackend.PostgresURL(t))
	ctx := t.Context()
	rec, _, err := s.CompareAndSwap(ctx, "k", 0, []byte("v"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	win := func() {
		t.Helper()
		next, swapped, err := s.CompareAndSwap(ctx, "k", rec.Version, []byte("v"), time.Hour)
		if err != nil || !swapped {
			t.Fatalf("swap from the current version: %t, %v", swapped, err)
		}
		rec = next
	}
	lose := func() {
		t.Helper()
		cur, swapped, err := s.CompareAndSwap(ctx, "k", rec.Version+1_000_000, []byte("x"), time.Hour)
		if err != nil || swapped || cur.Version != rec.Version || string(cur.Value) != "v" {
			t.Fatalf("swap from a wrong version = %+v, %t, %v; want the current record %+v", cur, swapped, err, rec)
		}
	}
	win()
	if got := postgres.Contention(s); got != 0 {
		t.Fatalf("contention after a win = %d, want 0", got)
	}
	lose() // two-step: update, then read
	if got := postgres.Contention(s); got != postgres.LossWeight {
		t.Fatalf("contention after a loss = %d, want %d", got, postgres.LossWeight)
	}
	lose() // combined
	for range postgres.LossWeight {
		win()
	}
	if got := postgres.Contention(s); got != postgres.LossWeight {
		t.Fatalf("contention after two losses and %d wins = %d, want %d", postgres.LossWeight, got, postgres.LossWeight)
	}
	for range 2 * postgres.MaxContention {
		lose()
	}
	if got := postgres.Contention(s); got != postgres.MaxContention {
		t.Fatalf("contention after many losses = %d, want %d", got, postgres.MaxContention)
	}
	for range 2 * postgres.MaxContention {
		win()
	}
	if got := postgres.Contention(s); got != 0 {
		t.Fatalf("contention after as many wins = %d, want 0", got)
	}
}

// The time to live goes to the server in whole microseconds, rounded up:
// a record never lives less than asked, and the longest durations do not
// overflow.
func TestTTLMicros(t *testing.T) {
	for _, c := range []struct {
		ttl  time.Duration
		want int64
	}{
		{0, 0},
		{time.Nanosecond, 1},
		{time.Microsecond, 1},
		{time.Microsecond + time.Nanosecond, 2},
		{time.Second, 1_000_000},
		{math.MaxInt64, math.MaxInt64/1000 + 1},
	} {
		if got := postgres.TTLMicros(c.ttl); got != c.want {
			t.Errorf("ttl %v sent as %d µs, want %d", c.ttl, got, c.want)
		}
	}
}

// backendPID returns the server process of tx's connection.
func backendPID(t *testing.T, tx pgx.Tx) int32 {
	t.Helper()
	var pid int32
	if err := tx.QueryRow(t.Context(), `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

// waitUntilBlocked polls, for at most 30 s, until a session waits for a
// lock that the server process holder holds, and fails with what if none
// does by then. poll, when not nil, runs before each look (to fail early).
func waitUntilBlocked(t *testing.T, url string, holder int32, what string, poll func()) {
	t.Helper()
	watch := newPool(t, url, 1)
	for deadline := time.Now().Add(30 * time.Second); ; {
		if poll != nil {
			poll()
		}
		var waiting int
		if err := watch.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, holder).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// roleURL creates a login role name for the test, dropped when it ends,
// that may use quotedSchema, take tableGrant (say "SELECT, UPDATE") on
// table (quoted) and use the table's version sequence, and returns url
// logged in as that role. It skips the test when the test's own role may
// not create roles.
func roleURL(t *testing.T, url, name, quotedSchema, table, tableGrant string) string {
	t.Helper()
	quotedRole := pgx.Identifier{name}.Sanitize()
	admin := newPool(t, url, 1)
	if _, err := admin.Exec(t.Context(), "CREATE ROLE "+quotedRole+" LOGIN PASSWORD 'sluice'"); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42501" {
			t.Skipf("the test's role may not create roles: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { execSQL(t, url, "DROP OWNED BY "+quotedRole, "DROP ROLE "+quotedRole) })
	var seq string
	if err := admin.QueryRow(t.Context(), "SELECT pg_get_serial_sequence($1, 'version')", table).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	execSQL(t, url,
		"GRANT USAGE ON SCHEMA "+quotedSchema+" TO "+quotedRole,
		"GRANT "+tableGrant+" ON "+table+" TO "+quotedRole,
		"GRANT USAGE ON SEQUENCE "+seq+" TO "+quotedRole)
	u, err := neturl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	u.User = neturl.UserPassword(name, "sluice")
	return u.String()
}

// otherClient begins a transaction on a connection of its own, as another
// client of the table would; unless committed, it is rolled back when the
// test ends.
func otherClient(t *testing.T, url string) pgx.Tx {
	t.Helper()
	tx, err := newPool(t, url, 1).Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	return tx
}

// swapResult is what a CompareAndSwap returned.
type swapResult struct {
	rec     storage.Record
	swapped bool
	err     error
}

// swapInBackground runs CompareAndSwap(ctx, key, expected, value, time.Hour)
// in a goroutine of its own and sends what it returned on the channel.
func swapInBackground(ctx context.Context, s storage.Store, key string, expected uint64, value []byte) <-chan swapResult {
	done := make(chan swapResult, 1)
	go func() {
		rec, swapped, err := s.CompareAndSwap(ctx, key, expected, value, time.Hour)
		done <- swapResult{rec, swapped, err}
	}()
	return done
}
