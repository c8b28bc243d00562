package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-go/sluice/internal/fakeclock"
	"github.com/sluice-go/sluice/internal/testbackend"
	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/postgres"
)

// The test binary re-executes itself as a child process when childEnv is
// set; the child reads its task from these variables and prints one JSON
// report on stdout.
const (
	childEnv      = "SLUICE_POSTGRES_TEST_CHILD" // the task: "admit" or "write"
	childURL      = "SLUICE_POSTGRES_TEST_URL"
	childTable    = "SLUICE_POSTGRES_TEST_TABLE"
	childKeys     = "SLUICE_POSTGRES_TEST_KEYS"
	childAttempts = "SLUICE_POSTGRES_TEST_ATTEMPTS"
	childNow      = "SLUICE_POSTGRES_TEST_NOW" // the limiter's frozen clock, Unix nanoseconds
)

// The limit the processes share: 1000 per hour.
var sharedBucket = []limiter.Bucket{{Capacity: 1000, Period: time.Hour}}

// childGoroutines is how many goroutines each child decides with.
const childGoroutines = 16

// childReport is what a child prints.
type childReport struct {
	Admitted   map[string]int64  // admit: per key
	Contention int64             // admit: calls that failed with limiter.ErrContention
	Errors     int64             // admit: calls that failed otherwise
	FirstError string            // admit: the first such failure
	Versions   map[string]uint64 // write: the version of each key written
}

// runChild runs the task of a child process and exits, or returns false
// in the parent.
func runChild() bool {
	task := os.Getenv(childEnv)
	if task == "" {
		return false
	}
	report, err := childTask(task)
	if err == nil {
		err = json.NewEncoder(os.Stdout).Encode(report)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	os.Exit(0)
	return true
}

// childTask opens its own pool, Store and Limiter and does task.
func childTask(task string) (*childReport, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	keys, _ := strconv.Atoi(os.Getenv(childKeys))
	attempts, _ := strconv.Atoi(os.Getenv(childAttempts))
	now, _ := strconv.ParseInt(os.Getenv(childNow), 10, 64)
	pool, err := openPool(os.Getenv(childURL), childGoroutines, false)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	store, err := postgres.New(ctx, pool, postgres.WithTable(os.Getenv(childTable)))
	if err != nil {
		return nil, err
	}
	defer store.Close()
	lim, err := limiter.New(store, sharedBucket, limiter.WithName("shared"), limiter.WithClock(fakeclock.New(time.Unix(0, now))))
	if err != nil {
		return nil, err
	}
	report := &childReport{Admitted: map[string]int64{}, Versions: map[string]uint64{}}
	switch task {
	case "admit":
		var (
			next int64 = -1
			mu   sync.Mutex
			wg   sync.WaitGroup
		)
		for range childGoroutines {
			wg.Go(func() {
				for {
					i := atomic.AddInt64(&next, 1)
					if i >= int64(attempts) {
						return
					}
					key := fmt.Sprintf("key%d", i%int64(keys))
					d, err := lim.Allow(ctx, key)
					mu.Lock()
					switch {
					case errors.Is(err, limiter.ErrContention):
						report.Contention++
					case err != nil:
						report.Errors++
						if report.FirstError == "" {
							report.FirstError = err.Error()
						}
					case d.Allowed:
						report.Admitted[key]++
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	case "write":
		for i := range keys {
			key := fmt.Sprintf("record%d", i)
			rec, swapped, err := store.CompareAndSwap(ctx, key, 0, []byte("value of "+key), time.Hour)
			if err != nil || !swapped {
				return nil, fmt.Errorf("CompareAndSwap(%q) = %t, %v", key, swapped, err)
			}
			report.Versions[key] = rec.Version
		}
		for range attempts {
			if d, err := lim.Allow(ctx, "user"); err != nil || !d.Allowed {
				return nil, fmt.Errorf("Allow = %+v, %v", d, err)
			}
		}
	default:
		return nil, fmt.Errorf("unknown task %q", task)
	}
	return report, nil
}

// startChildren runs n child processes with task and returns their
// reports.
func startChildren(t *testing.T, n int, env ...string) []childReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	reports := make([]childReport, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), env...)
			var stderr lockedBuffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				errs[i] = fmt.Errorf("child %d: %w: %s", i+1, err, stderr.String())
				return
			}
			if err := json.Unmarshal(out, &reports[i]); err != nil {
				errs[i] = fmt.Errorf("child %d: %w in %q", i+1, err, out)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return reports
}

// lockedBuffer collects a child's stderr.
type lockedBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// childEnvFor returns the environment of a child working on tb's table.
func childEnvFor(tb testing.TB, url, task string, keys, attempts int, now time.Time) []string {
	return []string{
		childEnv + "=" + task,
		childURL + "=" + url,
		childTable + "=" + testbackend.Namespace(tb),
		childKeys + "=" + strconv.Itoa(keys),
		childAttempts + "=" + strconv.Itoa(attempts),
		childNow + "=" + strconv.FormatInt(now.UnixNano(), 10),
	}
}

// TestManyProcessesOneLimit: 4 processes, each with its own pool, Store,
// Limiter and 16 goroutines, make 20,000 attempts on keys limited to 1000
// per hour; every key admits exactly 1000. The limiters' clocks are frozen
// at one instant, so no token is refilled while the test runs.
func TestManyProcessesOneLimit(t *testing.T) {
	const (
		processes = 4
		attempts  = 20000
	)
	for _, keys := range []int{1, 10} {
		t.Run(fmt.Sprintf("%d keys", keys), func(t *testing.T) {
			url := testbackend.PostgresURL(t)
			openStore(t, url) // makes the table, dropped at the end
			reports := startChildren(t, processes,
				childEnvFor(t, url, "admit", keys, attempts/processes, time.Now())...)
			admitted := map[string]int64{}
			for i, r := range reports {
				if r.Errors > 0 {
					t.Errorf("process %d: %d calls failed, the first with %s", i+1, r.Errors, r.FirstError)
				}
				if r.Contention > 0 {
					// The limiter gives up after losing many swaps in a row;
					// such a call takes nothing, so the count stays exact.
					t.Logf("process %d: %d calls failed with limiter.ErrContention", i+1, r.Contention)
				}
				for k, n := range r.Admitted {
					admitted[k] += n
				}
			}
			for i := range keys {
				key := fmt.Sprintf("key%d", i)
				if got, want := admitted[key], sharedBucket[0].Capacity; got != want {
					t.Errorf("%s: %d processes admitted %d in all, want exactly %d (per process: %v)",
						key, processes, got, want, reports)
				}
			}
		})
	}
}

// TestSurvivesRestartOfTheProcess: what one process writes through its
// pool, a new pool in another process reads back exactly.
func TestSurvivesRestartOfTheProcess(t *testing.T) {
	url := testbackend.PostgresURL(t)
	openStore(t, url)
	now := time.Now()
	const records, used = 5, 7
	report := startChildren(t, 1, childEnvFor(t, url, "write", records, used, now)...)[0]

	s := openStore(t, url)
	for key, version := range report.Versions {
		got, err := s.Get(t.Context(), key)
		if err != nil || got.Version != version || string(got.Value) != "value of "+key {
			t.Errorf("Get(%q) in a new process = %+v, %v; want Version %d and %q", key, got, err, version, "value of "+key)
		}
	}
	if len(report.Versions) != records {
		t.Errorf("the child wrote %d records, want %d", len(report.Versions), records)
	}
	lim, err := limiter.New(s, sharedBucket, limiter.WithName("shared"), limiter.WithClock(fakeclock.New(now)))
	if err != nil {
		t.Fatal(err)
	}
	d, err := lim.Peek(t.Context(), "user")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := d.Remaining, sharedBucket[0].Capacity-used; got != want {
		t.Errorf("Peek in a new process: Remaining = %d, want %d", got, want)
	}
}

// TestServerRestart: while the server is down, calls fail with
// storage.ErrUnavailable inside their deadline; once it is back, they
// succeed again and the data is still there.
func TestServerRestart(t *testing.T) {
	srv := testbackend.StartPostgres(t)
	pool := newPool(t, srv.URL(), 4)
	s, err := postgres.New(t.Context(), pool, postgres.WithTable("restart"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rec, _, err := s.CompareAndSwap(t.Context(), "k", 0, []byte("before"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	const deadline = 2 * time.Second
	for name, call := range map[string]func(context.Context) error{
		"Get": func(ctx context.Context) error { _, err := s.Get(ctx, "k"); return err },
		"CompareAndSwap": func(ctx context.Context) error {
			_, _, err := s.CompareAndSwap(ctx, "k", rec.Version, nil, time.Hour)
			return err
		},
		"Delete": func(ctx context.Context) error { return s.Delete(ctx, "k") },
	} {
		ctx, cancel := context.WithTimeout(t.Context(), deadline)
		start := time.Now()
		err := call(ctx)
		took := time.Since(start)
		cancel()
		if !errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("%s with the server down = %v, want storage.ErrUnavailable", name, err)
		}
		if took > deadline+500*time.Millisecond {
			t.Errorf("%s with the server down took %v, deadline %v", name, took, deadline)
		}
	}

	srv.Start()
	var got storage.Record
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(t.Context(), deadline)
		got, err = s.Get(ctx, "k")
		cancel()
		if err == nil {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("Get after the server came back: %v", err)
		}
	}
	if got.Version != rec.Version || string(got.Value) != "before" {
		t.Errorf("Get after the restart = %+v, want %+v", got, rec)
	}
	if _, swapped, err := s.CompareAndSwap(t.Context(), "k", rec.Version, []byte("after"), time.Hour); err != nil || !swapped {
		t.Errorf("CompareAndSwap after the restart = %t, %v", swapped, err)
	}
}
