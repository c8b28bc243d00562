package postgres_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluice-go/sluice/internal/testbackend"
	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/postgres"
)

// casOutcome is what one CompareAndSwap returned.
type casOutcome struct {
	rec     storage.Record
	swapped bool
	err     error
}

// oneConnStore returns a Store over t's own table, dropped when t ends,
// and its pool, which has one connection.
func oneConnStore(t *testing.T) (*postgres.Store, *pgxpool.Pool) {
	t.Helper()
	url := testbackend.PostgresURL(t)
	t.Cleanup(func() { dropTable(t, url, testbackend.Namespace(t)) })
	pool := newPool(t, url, 1)
	return storeOn(t, pool), pool
}

// busyStore returns a Store over t's own table whose pool has one
// connection, and that connection, held: the Store's first call waits
// for it, and the others queue, until the caller releases it.
func busyStore(t *testing.T) (*postgres.Store, *pgxpool.Conn) {
	t.Helper()
	s, pool := oneConnStore(t)
	held, err := pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return s, held
}

// queueBehindBusyPool runs one CompareAndSwap with expected 0 per key, all
// at once, on a Store whose pool has one connection, held by the test
// until all but one call are queued: that one goes alone, then the queued
// ones together. It returns each call's outcome, by index.
func queueBehindBusyPool(t *testing.T, keys []string) (*postgres.Store, []casOutcome) {
	t.Helper()
	s, held := busyStore(t)
	out := make([]casOutcome, len(keys))
	var wg sync.WaitGroup
	for i, key := range keys {
		wg.Go(func() {
			value := fmt.Appendf(nil, "value %d", i)
			rec, swapped, err := s.CompareAndSwap(t.Context(), key, 0, value, time.Minute)
			out[i] = casOutcome{rec, swapped, err}
		})
	}
	for i := 0; postgres.Queued(s) != len(keys)-1; i++ {
		if i == 10000 {
			held.Release()
			t.Fatalf("%d calls queued after 10s, want %d", postgres.Queued(s), len(keys)-1)
		}
		time.Sleep(time.Millisecond)
	}
	held.Release()
	wg.Wait()
	return s, out
}

// Calls that find the pool busy go out together, as one transaction, and
// each caller gets its own statement's outcome: two calls on one key run
// one after the other, the second losing to the first.
func TestBusyCallsShareOneTransaction(t *testing.T) {
	keys := []string{"c", "a", "dup", "b", "dup", "d"}
	s, out := queueBehindBusyPool(t, keys)
	var dupWinner, dupLoser *casOutcome
	for i, o := range out {
		if keys[i] == "dup" {
			if o.swapped {
				dupWinner = &out[i]
			} else {
				dupLoser = &out[i]
			}
			continue
		}
		want := fmt.Sprintf("value %d", i)
		if o.err != nil || !o.swapped || string(o.rec.Value) != want || o.rec.Version == 0 {
			t.Errorf("CompareAndSwap(%q, 0) = %+v, %t, %v; want %q swapped in", keys[i], o.rec, o.swapped, o.err, want)
		}
	}
	if dupWinner == nil || dupLoser == nil || dupLoser.err != nil || dupLoser.rec.Version != dupWinner.rec.Version ||
		string(dupLoser.rec.Value) != string(dupWinner.rec.Value) {
		t.Fatalf("two calls on one key: %+v and %+v; want one swapped in and the other to get its record", *dupWinner, *dupLoser)
	}
	// Rows one transaction wrote share their xmin. Five calls were
	// queued; a transaction takes one call per key, so the second call on
	// "dup", if queued, went in a second one. The first wrote at least
	// three of the five rows, and more if the call that went alone was on
	// "dup" (the batch then wrote its row again).
	pool := newPool(t, testbackend.PostgresURL(t), 1)
	table := pgx.Identifier{testbackend.Namespace(t)}.Sanitize()
	if n := queryInt(t, pool, "SELECT max(n) FROM (SELECT count(*) AS n FROM "+table+" GROUP BY xmin::text) AS x"); n < 3 {
		t.Errorf("at most %d rows were written by one transaction, want at least 3", n)
	}
	for i, key := range keys {
		rec, err := s.Get(t.Context(), key)
		if err != nil || (key != "dup" && rec.Version != out[i].rec.Version) || (key == "dup" && rec.Version != dupWinner.rec.Version) {
			t.Errorf("Get(%q) = %+v, %v; want what its CompareAndSwap returned", key, rec, err)
		}
	}
}

// A statement the server refuses rolls its batch back; the other calls
// are sent again alone and succeed, and only the refused one fails, as it
// would alone.
func TestRefusedStatementFailsOnlyItsCall(t *testing.T) {
	// A random key this long is over the size of a primary key entry.
	long := make([]byte, 8000)
	rand.Read(long)
	keys := []string{"a", "b", string(long), "c", "d"}
	_, out := queueBehindBusyPool(t, keys)
	for i, o := range out {
		if i == 2 {
			var pgErr *pgconn.PgError
			if !errors.Is(o.err, storage.ErrUnavailable) || !errors.As(o.err, &pgErr) || o.swapped {
				t.Errorf("CompareAndSwap of an 8000-byte key = %+v, %t, %v; want the server's error", o.rec, o.swapped, o.err)
			}
			continue
		}
		if o.err != nil || !o.swapped {
			t.Errorf("CompareAndSwap(%q, 0) = %+v, %t, %v; want it swapped in", keys[i], o.rec, o.swapped, o.err)
		}
	}
}

// A caller whose context ends while its call is queued gets the context's
// error, and the call is not sent.
func TestQueuedCallGivenUp(t *testing.T) {
	s, held := busyStore(t)
	defer held.Release()
	ctx, cancel := context.WithCancel(t.Context())
	errs := make(chan error, 2)
	go func() {
		_, _, err := s.CompareAndSwap(t.Context(), "alone", 0, []byte("v"), time.Minute)
		errs <- err
	}()
	go func() {
		_, _, err := s.CompareAndSwap(ctx, "queued", 0, []byte("v"), time.Minute)
		errs <- err
	}()
	for i := 0; postgres.Queued(s) != 1; i++ {
		if i == 10000 {
			t.Fatal("no call queued after 10s")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("the queued call whose context ended returned %v, want context.Canceled", err)
	}
	held.Release()
	if err := <-errs; err != nil {
		t.Fatalf("the call sent alone: %v", err)
	}
	if rec, err := s.Get(t.Context(), "queued"); err != nil || rec.Version != 0 {
		t.Errorf("Get(queued) = %+v, %v; want nothing written", rec, err)
	}
}

// A queued call may be sent after its caller gave up (the call was
// already taken for a round trip): the caller may then reuse its value
// slice, which must not reach the table.
func TestQueuedCallKeepsItsOwnValue(t *testing.T) {
	url := testbackend.PostgresURL(t)
	t.Cleanup(func() { dropTable(t, url, testbackend.Namespace(t)) })
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	// gate, when set, holds up the next acquire of a connection until it
	// is closed; entered says that an acquire is held up.
	var gate atomic.Pointer[chan struct{}]
	entered := make(chan struct{}, 1)
	cfg.PrepareConn = func(context.Context, *pgx.Conn) (bool, error) {
		if ch := gate.Swap(nil); ch != nil {
			entered <- struct{}{}
			<-*ch
		}
		return true, nil
	}
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s := storeOn(t, pool)

	first := make(chan struct{})
	gate.Store(&first)
	errs := make(chan error, 3)
	go func() {
		_, _, err := s.CompareAndSwap(t.Context(), "alone", 0, []byte("v"), time.Minute)
		errs <- err
	}()
	<-entered
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	value := []byte("the value given")
	given := make(chan error, 1)
	go func() {
		_, _, err := s.CompareAndSwap(ctx, "given up", 0, value, time.Minute)
		given <- err
	}()
	go func() {
		_, _, err := s.CompareAndSwap(t.Context(), "other", 0, []byte("v"), time.Minute)
		errs <- err
	}()
	for i := 0; postgres.Queued(s) != 2; i++ {
		if i == 10000 {
			t.Fatal("calls not queued after 10s")
		}
		time.Sleep(time.Millisecond)
	}
	// The first call ends, and the queued ones are taken together; their
	// round trip waits for a connection while the caller gives up and
	// writes over its slice.
	second := make(chan struct{})
	gate.Store(&second)
	close(first)
	if err := <-errs; err != nil {
		t.Fatalf("the call sent alone: %v", err)
	}
	<-entered
	cancel()
	if err := <-given; !errors.Is(err, context.Canceled) {
		t.Fatalf("the call given up returned %v, want context.Canceled", err)
	}
	copy(value, "written after..")
	close(second)
	if err := <-errs; err != nil {
		t.Fatalf("the other queued call: %v", err)
	}
	rec, err := s.Get(t.Context(), "given up")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Version != 0 && string(rec.Value) != "the value given" {
		t.Errorf("Get = %q: the caller's slice, written after CompareAndSwap returned, reached the table", rec.Value)
	}
}

// A call on a key whose row another client holds locked does not hold up
// the calls sent with it: past a short lock wait, its transaction rolls
// back, the others commit without it, and it waits alone for the lock, as
// does a second call on that key, which a batch never holds.
func TestLockedKeyHoldsUpNoOtherCall(t *testing.T) {
	s, held := busyStore(t)
	defer held.Release()
	blocker, err := newPool(t, testbackend.PostgresURL(t), 1).Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Rollback(context.Background())
	table := pgx.Identifier{testbackend.Namespace(t)}.Sanitize()
	if _, err := blocker.Exec(t.Context(), "INSERT INTO "+table+" (key, value, expires_at) VALUES ('k', '', now() + interval '1 minute')"); err != nil {
		t.Fatal(err)
	}
	// Each call gives up after 10 s, so that the test ends even when the
	// locked call holds up the others.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	outcomes := make(chan string, 5)
	for i, key := range []string{"alone", "k", "x", "k", "y"} {
		go func() {
			_, swapped, err := s.CompareAndSwap(ctx, key, 0, []byte("v"), time.Minute)
			outcomes <- fmt.Sprintf("%s %t %v", key, swapped, err)
		}()
		if i == 0 {
			// The first call goes alone: the others must not overtake it.
			time.Sleep(100 * time.Millisecond)
		}
		for j := 0; postgres.Queued(s) != i; j++ {
			if j == 10000 {
				t.Fatalf("%d calls queued after 10s, want %d", postgres.Queued(s), i)
			}
			time.Sleep(time.Millisecond)
		}
	}
	held.Release()
	got := map[string]bool{}
	for range 3 {
		got[<-outcomes] = true
	}
	for _, want := range []string{"alone true <nil>", "x true <nil>", "y true <nil>"} {
		if !got[want] {
			t.Errorf("while k is locked, the outcomes are %v; want %q among them", got, want)
		}
	}
	if err := blocker.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	got = map[string]bool{<-outcomes: true, <-outcomes: true}
	if !got["k true <nil>"] || !got["k false <nil>"] {
		t.Errorf("once k is free: %v, want one call on k swapped in and the other to get its record", got)
	}
}

// The insert decides whether a row has expired at an instant read during
// the statement, not at the start of its transaction, which for a batch
// is earlier.
func TestInsertComparesExpiryWhenItRuns(t *testing.T) {
	s, pool := oneConnStore(t)
	// The transaction starts (now()) before the row is written; the row
	// expires before the insert runs.
	tx := begunTransaction(t, pool)
	other := storeOn(t, newPool(t, testbackend.PostgresURL(t), 1))
	if _, _, err := other.CompareAndSwap(t.Context(), "k", 0, []byte("old"), 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	var (
		swapped bool
		version int64
		current []byte
		live    bool
		now     time.Time
	)
	err := tx.QueryRow(t.Context(), postgres.InsertSQL(s), []byte("k"), []byte("new"), int64(60_000_000)).Scan(&swapped, &version, &current, &live, &now)
	if err != nil || !swapped {
		t.Fatalf("insert over a row that expired before it ran: swapped %t, current %q, error %v; want it taken over", swapped, current, err)
	}
}

// A call of a batch whose transaction fails with an error keeps that error:
// it is not left marked to be sent again alone by an earlier transaction
// that rolled back, which would then meet its own write, were it
// committed, and report a conflict with it.
func TestFailedBatchLeavesNoCallToSendAgain(t *testing.T) {
	s, _ := oneConnStore(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	again, err := postgres.InsertInFailedBatch(ctx, s, "k", []byte("v"))
	if err == nil || again {
		t.Errorf("insert of a failed batch: error %v, marked to be sent again %v; want the error and no mark", err, again)
	}
}

// Get reads a row deleted before its snapshot as absent, also in a
// transaction that began before the Delete (now() is then earlier than
// the instant the Delete expired the row at).
func TestGetAfterDeleteInOlderTransaction(t *testing.T) {
	s, _ := oneConnStore(t)
	pool := newPool(t, testbackend.PostgresURL(t), 1)
	if _, ok, err := s.CompareAndSwap(t.Context(), "k", 0, []byte("v"), time.Hour); err != nil || !ok {
		t.Fatalf("write: %v, %v", ok, err)
	}
	tx := begunTransaction(t, pool)
	if err := s.Delete(t.Context(), "k"); err != nil {
		t.Fatal(err)
	}
	var (
		value   []byte
		version *int64
		now     time.Time
	)
	if err := tx.QueryRow(t.Context(), postgres.GetSQL(s), []byte("k")).Scan(&value, &version, &now); err != nil {
		t.Fatal(err)
	}
	if version != nil {
		t.Errorf("get after a committed Delete: value %q, version %d; want absent", value, *version)
	}
}

// begunTransaction begins a transaction on pool and runs a statement in
// it, so that its now() is fixed from here on; it rolls back when t ends.
func begunTransaction(t *testing.T, pool *pgxpool.Pool) pgx.Tx {
	t.Helper()
	tx, err := pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	if _, err := tx.Exec(t.Context(), "SELECT now()"); err != nil {
		t.Fatal(err)
	}
	return tx
}
