package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluice-go/sluice/internal/testbackend"
	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/postgres"
)

// An insert (expected 0) that loses to a live record leaves that record
// as it is: its value, its version and its expiry.
func TestLosingInsertKeepsTheExpiry(t *testing.T) {
	s := openStore(t, testbackend.PostgresURL(t))
	ctx := t.Context()
	rec, swapped, err := s.CompareAndSwap(ctx, "k", 0, []byte("v"), time.Hour)
	if err != nil || !swapped {
		t.Fatalf("CompareAndSwap = %t, %v", swapped, err)
	}
	cur, swapped, err := s.CompareAndSwap(ctx, "k", 0, []byte("x"), time.Millisecond)
	if err != nil || swapped || cur.Version != rec.Version {
		t.Fatalf("second insert = %+v, %t, %v; want a conflict with %+v", cur, swapped, err, rec)
	}
	time.Sleep(100 * time.Millisecond)
	if got, err := s.Get(ctx, "k"); err != nil || got.Version != rec.Version || string(got.Value) != "v" {
		t.Errorf("Get 100ms after a losing insert with ttl 1ms = %+v, %v; want %+v, still live for an hour", got, err, rec)
	}
}

// Sweep walks on past a full batch of live rows to the expired ones after
// them (it does not rescan the first batch for ever).
func TestSweepWalksPastLiveRows(t *testing.T) {
	url := testbackend.PostgresURL(t)
	s := openStore(t, url, postgres.WithSweepInterval(-1))
	table := pgx.Identifier{testbackend.Namespace(t)}.Sanitize()
	execSQL(t, url,
		`INSERT INTO `+table+` (key, value, expires_at)
		SELECT convert_to('a-live' || g, 'UTF8'), '', clock_timestamp() + interval '1 hour' FROM generate_series(1, 1500) g`,
		`INSERT INTO `+table+` (key, value, expires_at)
		SELECT convert_to('b-expired' || g, 'UTF8'), '', clock_timestamp() - interval '2 minutes' FROM generate_series(1, 300) g`)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if deleted, err := s.Sweep(ctx); err != nil || deleted != 300 {
		t.Errorf("Sweep = %d, %v; want 300 (the expired rows after 1500 live ones)", deleted, err)
	}
}

// A row whose version is not positive was not written by sluice: reading
// it is an error wrapping storage.ErrCorrupt, not an absent record.
func TestVersionZeroIsCorrupt(t *testing.T) {
	url := testbackend.PostgresURL(t)
	s := openStore(t, url)
	table := pgx.Identifier{testbackend.Namespace(t)}.Sanitize()
	execSQL(t, url, `INSERT INTO `+table+` (key, value, version, expires_at) VALUES
		('zero', 'v', 0, clock_timestamp() + interval '1 hour'),
		('negative', 'v', -1, clock_timestamp() + interval '1 hour')`)
	for _, key := range []string{"zero", "negative"} {
		if rec, err := s.Get(t.Context(), key); !errors.Is(err, storage.ErrCorrupt) {
			t.Errorf("Get(%q) = %+v, %v; want an error wrapping storage.ErrCorrupt", key, rec, err)
		}
		if rec, _, err := s.CompareAndSwap(t.Context(), key, 0, []byte("x"), time.Hour); !errors.Is(err, storage.ErrCorrupt) {
			t.Errorf("CompareAndSwap(%q, 0) = %+v, %v; want an error wrapping storage.ErrCorrupt", key, rec, err)
		}
	}
}

// When ctx ends during a call and the failure the server reports does not
// say so (a cancel request answered with query_canceled), the error
// still wraps the context's error, besides ErrUnavailable and the cause.
func TestCtxEndingDuringCallIsWrapped(t *testing.T) {
	url := testbackend.PostgresURL(t)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: 10 * time.Second}
	}
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	table := testbackend.Namespace(t)
	t.Cleanup(func() { dropTable(t, url, table) })
	s := storeOn(t, pool)
	rec, _, err := s.CompareAndSwap(t.Context(), "k", 0, []byte("v"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tx := otherClient(t, url)
	if _, err := tx.Exec(t.Context(), `SELECT FROM `+pgx.Identifier{table}.Sanitize()+` WHERE key = 'k' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	// The context ends once the swap waits for the row's lock, so that
	// the server, not the client, ends the statement.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, _, err := s.CompareAndSwap(ctx, "k", rec.Version, []byte("w"), time.Hour)
		done <- err
	}()
	waitUntilBlocked(t, url, backendPID(t, tx), "the swap never waited for the row's lock", func() {
		select {
		case err := <-done:
			t.Fatalf("CompareAndSwap returned %v before the row's lock was released", err)
		default:
		}
	})
	cancel()
	err = <-done
	var pgErr *pgconn.PgError
	if !errors.Is(err, storage.ErrUnavailable) || !errors.Is(err, context.Canceled) || !errors.As(err, &pgErr) {
		t.Errorf("CompareAndSwap whose ctx ended while it waited for a lock = %v; want an error wrapping storage.ErrUnavailable, context.Canceled and *pgconn.PgError", err)
	}
}

// New fails on a table whose version column is GENERATED ALWAYS, which
// the swaps could not write.
func TestNewRejectsVersionGeneratedAlways(t *testing.T) {
	url := testbackend.PostgresURL(t)
	table := testbackend.Namespace(t)
	t.Cleanup(func() { dropTable(t, url, table) })
	execSQL(t, url, "CREATE TABLE "+pgx.Identifier{table}.Sanitize()+
		` (key bytea PRIMARY KEY, value bytea NOT NULL, version bigint GENERATED ALWAYS AS IDENTITY, expires_at timestamptz NOT NULL)`)
	s, err := postgres.New(t.Context(), newPool(t, url, 1), postgres.WithTable(table))
	if err == nil {
		s.Close()
		t.Fatal("New over a table whose version is GENERATED ALWAYS succeeded, want an error")
	}
	if want := `column "version" is GENERATED ALWAYS`; !strings.Contains(err.Error(), want) {
		t.Errorf("New = %v, want an error containing %q", err, want)
	}
}

// Without WithSweepInterval, the background sweep runs; with a negative
// interval it does not.
func TestDefaultStartsTheSweep(t *testing.T) {
	url := testbackend.PostgresURL(t)
	if s := openStore(t, url); !postgres.Sweeping(s) {
		t.Error("New without WithSweepInterval started no background sweep")
	}
	if s := openStore(t, url, postgres.WithSweepInterval(-1)); postgres.Sweeping(s) {
		t.Error("New with WithSweepInterval(-1) started a background sweep")
	}
}

// The read of the current record after a lost update fails like every
// other statement: with storage.ErrUnavailable and the server's cause.
// Here the role may read every column but value, which only that read
// needs.
func TestReadAfterLostUpdateErrorIsWrapped(t *testing.T) {
	url := testbackend.PostgresURL(t)
	owner := openStore(t, url)
	rec, _, err := owner.CompareAndSwap(t.Context(), "k", 0, []byte("v"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	table := pgx.Identifier{testbackend.Namespace(t)}.Sanitize()
	var schema string
	if err := newPool(t, url, 1).QueryRow(t.Context(), "SELECT current_schema()").Scan(&schema); err != nil {
		t.Fatal(err)
	}
	role := testbackend.Namespace(t) + "_novalue"
	login := roleURL(t, url, role, pgx.Identifier{schema}.Sanitize(), table, "SELECT (key, version, expires_at), UPDATE (value, version, expires_at)")
	s := storeOn(t, newPool(t, login, 1), postgres.WithSweepInterval(-1))
	postgres.PinSwapForm(s, false)
	_, _, err = s.CompareAndSwap(t.Context(), "k", rec.Version+1_000_000, []byte("x"), time.Hour)
	var pgErr *pgconn.PgError
	if !errors.Is(err, storage.ErrUnavailable) || !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Errorf("CompareAndSwap whose read of the current record failed = %v; want an error wrapping storage.ErrUnavailable and the server's insufficient_privilege", err)
	}
}

// New succeeds when another client, which does not take New's advisory
// lock (a migration, say), creates the table at the same moment: New's own
// CREATE TABLE then fails on the catalog's unique index, and the table
// exists.
func TestNewWhileAnotherClientCreatesTheTable(t *testing.T) {
	url := testbackend.PostgresURL(t)
	table := testbackend.Namespace(t)
	t.Cleanup(func() { dropTable(t, url, table) })
	ddl, err := postgres.Schema(table, false)
	if err != nil {
		t.Fatal(err)
	}
	tx := otherClient(t, url)
	if _, err := tx.Exec(t.Context(), ddl); err != nil {
		t.Fatal(err)
	}
	holder := backendPID(t, tx)
	pool := newPool(t, url, 2)
	type result struct {
		s   *postgres.Store
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := postgres.New(t.Context(), pool, postgres.WithTable(table))
		done <- result{s, err}
	}()
	waitUntilBlocked(t, url, holder, "New's CREATE TABLE never waited for the other client's", func() {
		select {
		case got := <-done:
			t.Fatalf("New returned %v before the other client committed its table", got.err)
		default:
		}
	})
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	got := <-done
	if got.err != nil {
		t.Fatalf("New while another client created the table = %v, want success", got.err)
	}
	defer got.s.Close()
	if _, swapped, err := got.s.CompareAndSwap(t.Context(), "k", 0, []byte("v"), time.Minute); err != nil || !swapped {
		t.Fatalf("CompareAndSwap = %t, %v", swapped, err)
	}
}

// New refuses a table, made by someone else, whose version sequence would
// not make versions grow for every key: one that caches values per
// session (each connection hands out its own range, so a key's versions
// can go down), counts down or cycles, or is unlogged (it restarts after a
// crash, repeating versions).
func TestNewRejectsUnsafeVersionSequence(t *testing.T) {
	url := testbackend.PostgresURL(t)
	for _, c := range []struct{ name, create, identity string }{
		{"cache", "CREATE TABLE", "(CACHE 20)"},
		{"cycle", "CREATE TABLE", "(CYCLE)"},
		{"decrement", "CREATE TABLE", "(INCREMENT BY -1)"},
		{"unlogged", "CREATE UNLOGGED TABLE", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			name := testbackend.Namespace(t)
			t.Cleanup(func() { dropTable(t, url, name) })
			execSQL(t, url, c.create+" "+pgx.Identifier{name}.Sanitize()+` (
	key bytea NOT NULL PRIMARY KEY, value bytea NOT NULL,
	version bigint GENERATED BY DEFAULT AS IDENTITY `+c.identity+`,
	expires_at timestamptz NOT NULL)`)
			pool := newPool(t, url, 1)
			if c.name == "unlogged" {
				var persistence string
				if err := pool.QueryRow(t.Context(), "SELECT relpersistence::text FROM pg_class WHERE oid = pg_get_serial_sequence($1, 'version')::regclass",
					pgx.Identifier{name}.Sanitize()).Scan(&persistence); err != nil {
					t.Fatal(err)
				}
				if persistence != "u" {
					t.Skipf("the sequence of an UNLOGGED table is %q here: a server before PostgreSQL 15 logs it", persistence)
				}
			}
			s, err := postgres.New(t.Context(), pool, postgres.WithTable(name), postgres.WithCreateTable(false), postgres.WithSweepInterval(-1))
			if err == nil {
				s.Close()
				t.Fatalf("New accepted a table whose version sequence is made with %s %s", c.create, c.identity)
			}
			if !strings.Contains(err.Error(), "sequence") {
				t.Errorf("New: %v; want an error naming the sequence", err)
			}
		})
	}
}

// TestVersionsGrowAcrossDelete: an insert draws its version from the
// sequence before it looks for a conflicting row, so one that waited for a
// row another writer held could go in under a version below the ones that
// row had, once a Delete removed it. Writers, readers and Delete hammer
// one key; no read may return a version below one a write had already
// returned. With 64 connections every call goes alone; with 2 most go in
// batches.
func TestVersionsGrowAcrossDelete(t *testing.T) {
	for _, conns := range []int32{64, 2} {
		t.Run(fmt.Sprintf("conns=%d", conns), func(t *testing.T) { testVersionsGrowAcrossDelete(t, conns) })
	}
}

func testVersionsGrowAcrossDelete(t *testing.T, conns int32) {
	url := testbackend.PostgresURL(t)
	t.Cleanup(func() { dropTable(t, url, testbackend.Namespace(t)) })
	s := storeOn(t, newPool(t, url, conns))
	ctx := t.Context()
	var highest atomic.Uint64 // the highest version a write returned
	raise := func(v uint64) {
		for old := highest.Load(); v > old && !highest.CompareAndSwap(old, v); old = highest.Load() {
		}
	}
	var (
		mu    sync.Mutex
		stale int
		first string
	)
	deadline := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	for g := range 12 {
		wg.Go(func() {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				switch g % 3 {
				case 0:
					if rec, ok, err := s.CompareAndSwap(ctx, "k", 0, []byte("inserted"), time.Hour); err != nil {
						t.Error(err)
						return
					} else if ok {
						raise(rec.Version)
					}
				case 1:
					floor := highest.Load()
					rec, err := s.Get(ctx, "k")
					if err != nil {
						t.Error(err)
						return
					}
					if rec.Version != 0 && rec.Version < floor {
						mu.Lock()
						if stale++; stale == 1 {
							first = fmt.Sprintf("read version %d (%q) after a write had returned %d", rec.Version, rec.Value, floor)
						}
						mu.Unlock()
					}
					if rec.Version != 0 {
						if rec, ok, err := s.CompareAndSwap(ctx, "k", rec.Version, []byte("updated"), time.Hour); err != nil {
							t.Error(err)
							return
						} else if ok {
							raise(rec.Version)
						}
					}
				case 2:
					if err := s.Delete(ctx, "k"); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if stale > 0 {
		t.Errorf("%d reads went back to an older version; the first %s", stale, first)
	}
}

// A row that expired, or was deleted, less than a minute ago stays for
// the sweep (it reads absent all the same): an insert that drew its
// version before the row expired still meets it, and draws a greater one.
// Here an insert stalls (a trigger sleeps) between drawing its version and
// looking for the row, while the row is updated, deleted and swept.
func TestStalledInsertMeetsDeletedRow(t *testing.T) {
	url := testbackend.PostgresURL(t)
	s := openStore(t, url, postgres.WithSweepInterval(-1))
	ctx := t.Context()
	table := pgx.Identifier{testbackend.Namespace(t)}.Sanitize()
	fn := pgx.Identifier{testbackend.Namespace(t) + "_stall"}.Sanitize()
	first, ok, err := s.CompareAndSwap(ctx, "slow", 0, []byte("v1"), time.Hour)
	if err != nil || !ok {
		t.Fatalf("first write: %v, %v", ok, err)
	}
	execSQL(t, url,
		`CREATE FUNCTION `+fn+`() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN IF NEW.key = 'slow' THEN PERFORM pg_sleep(1.5); END IF; RETURN NEW; END $$`,
		`CREATE TRIGGER stall BEFORE INSERT ON `+table+` FOR EACH ROW EXECUTE FUNCTION `+fn+`()`)
	t.Cleanup(func() { execSQL(t, url, `DROP TABLE IF EXISTS `+table, `DROP FUNCTION IF EXISTS `+fn+`()`) })
	late := swapInBackground(ctx, s, "slow", 0, []byte("late"))
	time.Sleep(300 * time.Millisecond) // the insert has drawn its version and sleeps
	newer, ok, err := s.CompareAndSwap(ctx, "slow", first.Version, []byte("v2"), time.Hour)
	if err != nil || !ok {
		t.Fatalf("update while the insert stalls: %v, %v", ok, err)
	}
	if err := s.Delete(ctx, "slow"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if rec, err := s.Get(ctx, "slow"); err != nil || rec.Version != 0 {
		t.Fatalf("Get after Delete: %+v, %v; want absent", rec, err)
	}
	r := <-late
	if r.err != nil || !r.swapped {
		t.Fatalf("the stalled insert over the deleted key: %v, %v; want it swapped", r.swapped, r.err)
	}
	if r.rec.Version <= newer.Version {
		t.Errorf("the stalled insert went in with version %d, below or at %d, which the key had before its Delete", r.rec.Version, newer.Version)
	}
}

// Sweep deletes rows a minute after they expired, not before.
func TestSweepKeepsRowsForAMinute(t *testing.T) {
	url := testbackend.PostgresURL(t)
	s := openStore(t, url, postgres.WithSweepInterval(-1))
	table := pgx.Identifier{testbackend.Namespace(t)}.Sanitize()
	execSQL(t, url, `INSERT INTO `+table+` (key, value, expires_at) VALUES
		('recent', '', clock_timestamp() - interval '50 seconds'),
		('old', '', clock_timestamp() - interval '70 seconds')`)
	if deleted, err := s.Sweep(t.Context()); err != nil || deleted != 1 {
		t.Errorf("Sweep = %d, %v; want 1, the row that expired 70 s ago", deleted, err)
	}
	if rec, err := s.Get(t.Context(), "recent"); err != nil || rec.Version != 0 {
		t.Errorf("Get of the row that expired 50 s ago: %+v, %v; want absent", rec, err)
	}
}

// TestInsertTellsForeignRowOfSameVersion: a live row holding the very
// version the sequence hands out next (copied in without its sequence) is
// not taken for the insert's own: the insert is a conflict returning that
// row, not a swap it did not make.
func TestInsertTellsForeignRowOfSameVersion(t *testing.T) {
	url := testbackend.PostgresURL(t)
	s := openStore(t, url)
	ctx := t.Context()
	if _, _, err := s.CompareAndSwap(ctx, "warm", 0, []byte("warm"), time.Minute); err != nil {
		t.Fatal(err)
	}
	table := pgx.Identifier{testbackend.Namespace(t)}.Sanitize()
	pool := newPool(t, url, 1)
	next := queryInt(t, pool, "SELECT last_value + 1 FROM "+pgx.Identifier{testbackend.Namespace(t) + "_version_seq"}.Sanitize())
	execSQL(t, url, fmt.Sprintf(`INSERT INTO %s (key, value, version, expires_at) VALUES ('k', 'theirs', %d, clock_timestamp() + interval '1 hour')`, table, next))
	rec, swapped, err := s.CompareAndSwap(ctx, "k", 0, []byte("mine"), time.Minute)
	if err != nil || swapped || rec.Version != uint64(next) || string(rec.Value) != "theirs" {
		t.Errorf("CompareAndSwap(k, 0, mine) over a live row of version %d = %+v, %t, %v; want a conflict returning that row", next, rec, swapped, err)
	}
}
