package bolt

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/sluice-go/sluice/conformance"
	"github.com/sluice-go/sluice/internal/fakeclock"
	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/storage"
)

// The test binary re-executes itself as a child process for the lock and
// crash tests; these variables tell the child what to do.
const (
	childRoleEnv = "SLUICE_BOLT_TEST_CHILD"
	childPathEnv = "SLUICE_BOLT_TEST_PATH"
)

func TestMain(m *testing.M) {
	if role := os.Getenv(childRoleEnv); role != "" {
		os.Exit(runChild(role, os.Getenv(childPathEnv)))
	}
	os.Exit(m.Run())
}

// handles remembers the database each test's first store opened, so that
// a second call of newStore with the same tb shares it: a bbolt file cannot
// be opened twice, even in one process.
var handles = struct {
	sync.Mutex
	db map[testing.TB]*bbolt.DB
}{db: map[testing.TB]*bbolt.DB{}}

// factory returns a conformance factory: a store over a new file in
// tb.TempDir(), opened with opts, or, called again with the same tb, a
// second store over the same *bbolt.DB through New.
func factory(opts ...Option) conformance.NewStore {
	return func(tb testing.TB) storage.Store {
		tb.Helper()
		handles.Lock()
		db, shared := handles.db[tb]
		handles.Unlock()
		if shared {
			s, err := New(db)
			if err != nil {
				tb.Fatalf("New: %v", err)
			}
			tb.Cleanup(func() { _ = s.Close() })
			return s
		}
		s, err := Open(filepath.Join(tb.TempDir(), "sluice.db"), opts...)
		if err != nil {
			tb.Fatalf("Open: %v", err)
		}
		handles.Lock()
		handles.db[tb] = s.db
		handles.Unlock()
		tb.Cleanup(func() {
			_ = s.Close()
			handles.Lock()
			delete(handles.db, tb)
			handles.Unlock()
		})
		return s
	}
}

// The suites run WithNoSync: they check semantics, which do not depend on
// fsync, and one of them needs 6,400 strictly sequential commits on one key
// (some 25 s synced under -race on a busy machine; it passes). Durability
// is proved below, synced: TestSurvivesRestart and
// TestCrashKeepsGrantedTokens. The benchmarks measure durable decisions.
func TestConformance(t *testing.T) {
	newStore := factory(WithNoSync())
	conformance.RunStore(t, newStore)
	conformance.RunLimiter(t, newStore)
}

func BenchmarkConformance(b *testing.B) {
	conformance.RunBenchmarks(b, factory())
}

// What follows is special to the bbolt driver.

var testBuckets = []limiter.Bucket{{Capacity: 10, Period: time.Hour}}

func testClock() *fakeclock.Clock {
	return fakeclock.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
}

func mustOpen(t *testing.T, path string, opts ...Option) *Store {
	t.Helper()
	s, err := Open(path, opts...)
	if err != nil {
		t.Fatalf("Open(%q): %v", path, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func mustLimiter(t *testing.T, s storage.Store, buckets []limiter.Bucket, clock limiter.Clock) *limiter.Limiter {
	t.Helper()
	lim, err := limiter.New(s, buckets, limiter.WithClock(clock))
	if err != nil {
		t.Fatalf("limiter.New: %v", err)
	}
	return lim
}

func TestSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "limits.db")
	clock := testClock()

	s := mustOpen(t, path)
	lim := mustLimiter(t, s, testBuckets, clock)
	for i := range 7 {
		d, err := lim.Allow(ctx, "user:42")
		if err != nil || !d.Allowed {
			t.Fatalf("Allow %d before restart = %+v, %v; want allowed", i, d, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = mustOpen(t, path)
	lim = mustLimiter(t, s, testBuckets, clock)
	d, err := lim.Peek(ctx, "user:42")
	if err != nil {
		t.Fatalf("Peek after restart: %v", err)
	}
	if got, want := d.Remaining, int64(3); got != want {
		t.Fatalf("Peek after restart: Remaining = %d, want %d", got, want)
	}
	for i := range 3 {
		if d, err := lim.Allow(ctx, "user:42"); err != nil || !d.Allowed || d.Remaining != int64(2-i) {
			t.Fatalf("Allow %d after restart = %+v, %v; want allowed, Remaining %d", i, d, err, 2-i)
		}
	}
	if d, err := lim.Allow(ctx, "user:42"); err != nil || d.Allowed {
		t.Fatalf("Allow after the last token = %+v, %v; want denied", d, err)
	}
}

// The crash test's child grants tokens from crashCapacity on crashKeys
// keys with crashWorkers goroutines, on a frozen clock so nothing refills,
// and prints one line per token granted, until it is killed.
const (
	crashCapacity = 1_000_000
	crashKeys     = 4
	crashWorkers  = 16 // crashWorkers/crashKeys goroutines per key
	crashLines    = 1000
)

var crashBuckets = []limiter.Bucket{{Capacity: crashCapacity, Period: 10 * 365 * 24 * time.Hour}}

func TestCrashKeepsGrantedTokens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "crash.db")
	cmd := child(t, "crash", path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}

	// Count the tokens the child was told it received; kill it with
	// SIGKILL once it is busy, then read what it printed before dying.
	granted := map[string]int64{}
	total := 0
	r := bufio.NewReader(out)
	deadline := time.AfterFunc(10*time.Second, func() { _ = cmd.Process.Kill() })
	defer deadline.Stop()
	killed := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			break // EOF after the kill; a line cut short was never told
		}
		granted[strings.TrimSuffix(line, "\n")]++
		total++
		if total == crashLines && !killed {
			killed = true
			if err := cmd.Process.Kill(); err != nil {
				t.Fatalf("kill child: %v", err)
			}
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("child ended (%v) after %d of the %d grants the test waits for; stderr:\n%s", err, total, crashLines, stderr.String())
	}
	t.Logf("child was told of %d tokens before SIGKILL (%v)", total, err)

	s := mustOpen(t, path)
	err = s.db.View(func(tx *bbolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("consistency check after the crash: %v", err)
	}
	lim := mustLimiter(t, s, crashBuckets, testClock())
	for k := range crashKeys {
		key := fmt.Sprintf("key-%d", k)
		d, err := lim.Peek(context.Background(), key)
		if err != nil {
			t.Fatalf("Peek(%q): %v", key, err)
		}
		// Every token the child was told of is durable. Beyond those, each
		// goroutine of the key may have had one grant committed but not yet
		// printed when it died.
		taken := crashCapacity - d.Remaining
		if g := granted[key]; taken < g || taken > g+crashWorkers/crashKeys {
			t.Errorf("%s: %d tokens taken after the crash; the child was told of %d, so want %d to %d",
				key, taken, g, g, g+crashWorkers/crashKeys)
		}
	}
}

// crashChild is the crash test's child process.
func crashChild(path string) error {
	s, err := Open(path)
	if err != nil {
		return err
	}
	lim, err := limiter.New(s, crashBuckets, limiter.WithClock(testClock()))
	if err != nil {
		return err
	}
	var mu sync.Mutex // one line per write, whole
	errc := make(chan error, crashWorkers)
	for w := range crashWorkers {
		key := fmt.Sprintf("key-%d", w%crashKeys)
		go func() {
			for {
				d, err := lim.Allow(context.Background(), key)
				if err != nil {
					errc <- err
					return
				}
				if !d.Allowed {
					errc <- fmt.Errorf("%s denied: %+v", key, d)
					return
				}
				mu.Lock()
				_, err = os.Stdout.WriteString(key + "\n")
				mu.Unlock()
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	return <-errc
}

func TestLockedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "locked.db")
	cmd := child(t, "hold", path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("child said %q, %v; want ready", line, err)
	}

	const timeout = 300 * time.Millisecond
	start := time.Now()
	s, err := Open(path, WithOpenTimeout(timeout))
	waited := time.Since(start)
	if err == nil {
		_ = s.Close()
		t.Fatal("Open of a file another process holds succeeded")
	}
	if !errors.Is(err, ErrLocked) || !errors.Is(err, bolterrors.ErrTimeout) {
		t.Errorf("Open error %v: want it to wrap ErrLocked and bbolt's ErrTimeout", err)
	}
	if !strings.Contains(err.Error(), "locked by another process") || !strings.Contains(err.Error(), path) {
		t.Errorf("Open error %q: want the path and %q", err, "locked by another process")
	}
	if waited < timeout-60*time.Millisecond || waited > timeout+2*time.Second {
		t.Errorf("Open gave up after %v, want about %v", waited, timeout)
	}

	// Once the other process lets go, the file opens.
	_ = stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	mustOpen(t, path, WithOpenTimeout(timeout))
}

// holdChild opens path, says so, and keeps it open until stdin closes.
func holdChild(path string) error {
	s, err := Open(path)
	if err != nil {
		return err
	}
	if _, err := os.Stdout.WriteString("ready\n"); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return s.Close()
}

// child returns a command that runs this test binary as the child role.
func child(t *testing.T, role, path string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Skipf("cannot find the test binary to re-execute: %v", err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childRoleEnv+"="+role, childPathEnv+"="+path)
	return cmd
}

func runChild(role, path string) int {
	var err error
	switch role {
	case "hold":
		err = holdChild(path)
	case "crash":
		err = crashChild(path)
	default:
		err = fmt.Errorf("unknown child role %q", role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "child %s: %v\n", role, err)
		return 2
	}
	return 0
}

func TestOpenBadInput(t *testing.T) {
	dir := t.TempDir()

	notDB := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(notDB, []byte(strings.Repeat("not a database\n", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}

	// Shorter than two pages, so bbolt refuses it before it reads a page.
	short := filepath.Join(dir, "short.bin")
	if err := os.WriteFile(short, bytes.Repeat([]byte{0xa5}, 8000), 0o600); err != nil {
		t.Fatal(err)
	}

	foreign := filepath.Join(dir, "foreign.db")
	db, err := bbolt.Open(foreign, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucket([]byte("sluice"))
		if err != nil {
			return err
		}
		return b.Put([]byte("config"), []byte("someone else's"))
	})
	if err := errors.Join(err, db.Close()); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		path string
		is   []error
		msg  string
	}{
		{"missing directory", filepath.Join(dir, "no", "such", "dir", "x.db"), []error{fs.ErrNotExist}, "no such file"},
		{"not a bbolt file", notDB, []error{storage.ErrCorrupt, bolterrors.ErrInvalid}, "not a bbolt database"},
		{"a short file, not a bbolt file", short, []error{storage.ErrCorrupt}, "not a bbolt database"},
		{"bucket of another program", foreign, []error{storage.ErrCorrupt}, `bucket "sluice" holds data not written by sluice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(tc.path, WithOpenTimeout(time.Second))
			if err == nil {
				_ = s.Close()
				t.Fatalf("Open(%q) succeeded", tc.path)
			}
			for _, target := range tc.is {
				if !errors.Is(err, target) {
					t.Errorf("Open error %v does not wrap %v", err, target)
				}
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "bolt: open ") || !strings.Contains(msg, tc.path) || !strings.Contains(msg, tc.msg) {
				t.Errorf("Open error %q: want the prefix, the path and %q", msg, tc.msg)
			}
		})
	}

	// The foreign file is left as it was.
	db, err = bbolt.Open(foreign, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bbolt.Tx) error {
		if got := tx.Bucket([]byte("sluice")).Stats().KeyN; got != 1 {
			return fmt.Errorf("foreign bucket holds %d keys after Open, want 1", got)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

func TestOptionErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	for name, opt := range map[string]Option{
		"empty bucket":            WithBucket(""),
		"the layouts bucket":      WithBucket(string(layoutsBucket)),
		"zero open timeout":       WithOpenTimeout(0),
		"negative open timeout":   WithOpenTimeout(-time.Second),
		"zero sweep interval":     WithSweepInterval(0),
		"negative sweep interval": WithSweepInterval(-time.Second),
	} {
		if s, err := Open(path, opt); err == nil {
			_ = s.Close()
			t.Errorf("Open with %s succeeded", name)
		}
	}

	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := New(nil); err == nil {
		t.Error("New(nil) succeeded")
	}
	for name, opt := range map[string]Option{"WithNoSync": WithNoSync(), "WithOpenTimeout": WithOpenTimeout(time.Second)} {
		if s, err := New(db, opt); err == nil || !strings.Contains(err.Error(), name) {
			if s != nil {
				_ = s.Close()
			}
			t.Errorf("New with %s = %v; want an error naming it", name, err)
		}
	}
}

func TestNewNeverClosesDB(t *testing.T) {
	ctx := context.Background()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "own.db"), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	delay := db.MaxBatchDelay
	s, err := New(db, WithBucket("limits"))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if _, _, err := s.CompareAndSwap(ctx, "k", 0, []byte("v"), time.Hour); err != nil {
		t.Fatalf("CompareAndSwap: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := s.Get(ctx, "k"); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Get after Close = %v, want ErrClosed", err)
	}
	err = db.View(func(tx *bbolt.Tx) error {
		if tx.Bucket([]byte("limits")).Get([]byte("k")) == nil {
			return errors.New("record missing from the caller's database")
		}
		return nil
	})
	if err != nil {
		t.Errorf("after Close, the caller's db: %v", err)
	}
	if db.MaxBatchDelay != delay || db.NoSync {
		t.Errorf("New changed the caller's db: MaxBatchDelay %v (was %v), NoSync %v", db.MaxBatchDelay, delay, db.NoSync)
	}
}

func TestCorruptRecords(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, filepath.Join(t.TempDir(), "corrupt.db"))
	truncated := make([]byte, headerLen-1) // past the version, one byte short of the header
	truncated[0] = formatV1
	bad := map[string][]byte{
		"foreign":   []byte("written by someone else"),
		"short":     {formatV1, 0, 0, 1},
		"truncated": truncated,
		"empty":     {},
	}
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(s.bucket)
		for k, v := range bad {
			if err := b.Put([]byte(k), v); err != nil {
				return err
			}
		}
		_, err := b.CreateBucket([]byte("nested"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"foreign", "short", "truncated", "empty", "nested"} {
		_, err := s.Get(ctx, key)
		checkCorrupt(t, "get", key, err)
		_, _, err = s.CompareAndSwap(ctx, key, 0, []byte("mine"), time.Hour)
		checkCorrupt(t, "cas", key, err)
		err = s.Delete(ctx, key)
		checkCorrupt(t, "delete", key, err)
	}
	if n, err := s.sweep(); err != nil || n != 0 {
		t.Errorf("sweep = %d, %v; want nothing removed", n, err)
	}
	err = s.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(s.bucket)
		for k, v := range bad {
			if got := b.Get([]byte(k)); string(got) != string(v) {
				return fmt.Errorf("%q holds %q, want it untouched: %q", k, got, v)
			}
		}
		if b.Bucket([]byte("nested")) == nil {
			return errors.New("nested bucket removed")
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

func checkCorrupt(t *testing.T, op, key string, err error) {
	t.Helper()
	if !errors.Is(err, storage.ErrCorrupt) {
		t.Errorf("%s %q = %v, want an error wrapping ErrCorrupt", op, key, err)
		return
	}
	if want := fmt.Sprintf("bolt: %s %q: ", op, key); !strings.HasPrefix(err.Error(), want) {
		t.Errorf("%s %q error %q: want prefix %q", op, key, err, want)
	}
}

func TestWriteHonoursContext(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, filepath.Join(t.TempDir(), "ctx.db"))

	// Hold bbolt's writer lock, so that the first write's transaction
	// cannot begin and the second write queues behind it.
	tx, err := s.db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	cas := func(ctx context.Context, key string) <-chan error {
		errc := make(chan error, 1)
		go func() {
			_, _, err := s.CompareAndSwap(ctx, key, 0, []byte("v"), time.Hour)
			errc <- err
		}()
		return errc
	}
	state := func() (busy bool, queued int) {
		s.queueMu.Lock()
		defer s.queueMu.Unlock()
		return s.busy, len(s.queue)
	}
	ctx1, cancel1 := context.WithCancel(ctx)
	first := cas(ctx1, "first")
	waitFor(t, "the first write to start its transaction", func() bool { busy, _ := state(); return busy })
	ctx2, cancel2 := context.WithCancel(ctx)
	queued := cas(ctx2, "queued")
	waitFor(t, "the second write to queue", func() bool { _, n := state(); return n == 1 })

	// A queued write whose ctx ends returns at once, with the writer lock
	// still held.
	cancel2()
	if err := <-queued; !errors.Is(err, context.Canceled) {
		t.Fatalf("CompareAndSwap cancelled while queued = %v, want context.Canceled", err)
	}
	// So does a write whose own transaction waits for the lock; the
	// transaction, once it has the lock, skips it.
	cancel1()
	select {
	case err := <-first:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("CompareAndSwap cancelled while its transaction waited = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		_ = tx.Rollback()
		t.Fatal("CompareAndSwap cancelled while its transaction waited for the writer lock did not return while the lock was held")
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}

	if _, _, err := s.CompareAndSwap(ctx, "third", 0, []byte("v"), time.Hour); err != nil {
		t.Fatalf("CompareAndSwap after the cancelled ones: %v", err)
	}
	for _, key := range []string{"first", "queued"} {
		if rec, err := s.Get(ctx, key); err != nil || rec.Version != 0 {
			t.Errorf("Get(%q) after its write was cancelled = %+v, %v; want absent", key, rec, err)
		}
	}
	waitFor(t, "the store to go idle with an empty queue", func() bool { busy, n := state(); return !busy && n == 0 })
}

func TestJanitor(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, filepath.Join(t.TempDir(), "sweep.db"))
	past := time.Now().Add(-time.Minute).UnixNano()
	const expired, live = 2500, 10
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(s.bucket)
		for i := range expired {
			if err := b.Put(fmt.Appendf(nil, "old-%05d", i), encodeRecord(uint64(i+1), past, []byte("x"))); err != nil {
				return err
			}
		}
		return b.Put([]byte("foreign"), []byte("left alone"))
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range live {
		if _, _, err := s.CompareAndSwap(ctx, fmt.Sprintf("new-%d", i), 0, []byte("y"), time.Hour); err != nil {
			t.Fatal(err)
		}
	}

	// One step takes at most sweepMaxDeletes and says where to go on.
	doomed, next, err := s.findExpired(nil, time.Now().UnixNano())
	if err != nil || len(doomed) != sweepMaxDeletes || next == nil {
		t.Fatalf("findExpired = %d keys, next %q, %v; want %d keys and a key to resume at", len(doomed), next, err, sweepMaxDeletes)
	}
	if n, err := s.sweep(); err != nil || n != expired {
		t.Fatalf("sweep = %d, %v; want %d", n, err, expired)
	}
	if got, want := keys(t, s), 1+live; got != want { // foreign, live
		t.Errorf("after sweep the bucket holds %d keys, want %d", got, want)
	}
	for i := range live {
		if rec, err := s.Get(ctx, fmt.Sprintf("new-%d", i)); err != nil || rec.Version == 0 {
			t.Errorf("live record new-%d after sweep = %+v, %v", i, rec, err)
		}
	}

	// The background janitor does the same on its own.
	s2 := mustOpen(t, filepath.Join(t.TempDir(), "bg.db"), WithSweepInterval(10*time.Millisecond))
	for i := range 20 {
		if _, _, err := s2.CompareAndSwap(ctx, fmt.Sprintf("k%d", i), 0, nil, time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the janitor to remove expired records", func() bool { return keys(t, s2) == 0 })
}

// keys counts the keys in s's bucket.
func keys(t *testing.T, s *Store) int {
	t.Helper()
	n := 0
	err := s.db.View(func(tx *bbolt.Tx) error {
		n = tx.Bucket(s.bucket).Stats().KeyN
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitFor polls cond for what only real time or another goroutine can
// bring about.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestVersionsSurviveDeleteAndRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "seq.db")
	s := mustOpen(t, path)
	rec, _, err := s.CompareAndSwap(ctx, "k", 0, []byte("a"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, path)
	again, swapped, err := s.CompareAndSwap(ctx, "k", 0, []byte("b"), time.Hour)
	if err != nil || !swapped || again.Version <= rec.Version {
		t.Fatalf("write after Delete and reopen = %+v, %v, %v; want a version above %d", again, swapped, err, rec.Version)
	}
}

// BenchmarkDecisions measures durable decisions over 10,000 keys, with 1
// and 64 goroutines, synced and WithNoSync: limiter.Allow over the store
// (its record cache makes most decisions one CompareAndSwap), the store
// alone (Get, then CompareAndSwap from what it read), and the floor of one
// db.Update per write doing the same read and write.
func BenchmarkDecisions(b *testing.B) {
	for _, g := range []int{1, 64} {
		for _, noSync := range []bool{false, true} {
			sync := map[bool]string{false: "sync", true: "nosync"}[noSync]
			var opts []Option
			if noSync {
				opts = append(opts, WithNoSync())
			}
			b.Run(fmt.Sprintf("limiter/g=%d/%s", g, sync), func(b *testing.B) {
				s, err := Open(filepath.Join(b.TempDir(), "bench.db"), opts...)
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				lim, err := limiter.New(s, []limiter.Bucket{{Capacity: 1 << 40, Period: time.Hour}})
				if err != nil {
					b.Fatal(err)
				}
				ctx := context.Background()
				runDecisions(b, g, func(key string) error {
					d, err := lim.Allow(ctx, key)
					if err == nil && !d.Allowed {
						err = fmt.Errorf("%s denied: %+v", key, d)
					}
					return err
				})
			})
			b.Run(fmt.Sprintf("store/g=%d/%s", g, sync), func(b *testing.B) {
				s, err := Open(filepath.Join(b.TempDir(), "bench.db"), opts...)
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				ctx := context.Background()
				value := make([]byte, 24)
				runDecisions(b, g, func(key string) error {
					rec, err := s.Get(ctx, key)
					if err != nil {
						return err
					}
					_, _, err = s.CompareAndSwap(ctx, key, rec.Version, value, time.Hour)
					return err
				})
			})
			b.Run(fmt.Sprintf("floor/g=%d/%s", g, sync), func(b *testing.B) {
				db, err := bbolt.Open(filepath.Join(b.TempDir(), "floor.db"), 0o600, &bbolt.Options{Timeout: time.Second, NoSync: noSync})
				if err != nil {
					b.Fatal(err)
				}
				defer db.Close()
				name := []byte("sluice")
				if err := db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket(name); return err }); err != nil {
					b.Fatal(err)
				}
				value := make([]byte, 24)
				runDecisions(b, g, func(key string) error {
					return db.Update(func(tx *bbolt.Tx) error {
						bk := tx.Bucket(name)
						_ = bk.Get([]byte(key))
						seq, err := bk.NextSequence()
						if err != nil {
							return err
						}
						return bk.Put([]byte(key), encodeRecord(seq, time.Now().Add(time.Hour).UnixNano(), value))
					})
				})
			})
		}
	}
}

// runDecisions runs b.N calls of decide with g goroutines over 10,000
// keys and reports decisions per second and the median latency.
func runDecisions(b *testing.B, g int, decide func(key string) error) {
	const nkeys = 10000
	keys := make([]string, nkeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("user:%05d", i)
	}
	var next atomic.Int64
	lat := make([][]time.Duration, g)
	var wg sync.WaitGroup
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	for w := range g {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				t0 := time.Now()
				if err := decide(keys[(i*7919)%nkeys]); err != nil {
					failed.Store(err)
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "decisions/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
}

// A record whose expiry has passed reads absent at once, before any sweep:
// Get returns Version 0, its old version conflicts and expected 0 swaps.
// (The conformance suite allows a few seconds of lateness for backends
// that expire on their own; this store decides expiry itself, exactly.)
func TestExpiredIsAbsentBeforeSweep(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, filepath.Join(t.TempDir(), "expired.db"))
	first, _, err := s.CompareAndSwap(ctx, "k", 0, []byte("old"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	v := first.Version
	// The same record, with an expiry 500ms past.
	lately := time.Now().Add(-500 * time.Millisecond).UnixNano()
	err = s.db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(s.bucket).Put([]byte("k"), encodeRecord(v, lately, []byte("old")))
	})
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := s.Get(ctx, "k"); err != nil || rec.Version != 0 || rec.Value != nil {
		t.Fatalf("Get of a record expired 500ms ago = %+v, %v; want absent", rec, err)
	}
	if rec, swapped, err := s.CompareAndSwap(ctx, "k", v, []byte("new"), time.Minute); err != nil || swapped || rec.Version != 0 {
		t.Fatalf("CompareAndSwap(expected %d) on the expired record = %+v, %t, %v; want a conflict with an absent record", v, rec, swapped, err)
	}
	if rec, swapped, err := s.CompareAndSwap(ctx, "k", 0, []byte("new"), time.Minute); err != nil || !swapped || rec.Version <= v {
		t.Fatalf("CompareAndSwap(expected 0) on the expired record = %+v, %t, %v; want a swap to a version above %d", rec, swapped, err, v)
	}
}
