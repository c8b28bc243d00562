package limiter_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-go/sluice/internal/fakeclock"
	"github.com/sluice-go/sluice/internal/faultstore"
	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/memory"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

// faulty returns a limiter over a fault-injecting memory store.
func faulty(t *testing.T, buckets []limiter.Bucket, opts ...limiter.Option) (*limiter.Limiter, *faultstore.Store, *fakeclock.Clock) {
	t.Helper()
	mem := memory.New()
	t.Cleanup(func() { mem.Close() })
	fs := faultstore.New(mem)
	clock := fakeclock.New(t0)
	lim, err := limiter.New(fs, buckets, append([]limiter.Option{limiter.WithClock(clock)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return lim, fs, clock
}

func TestNewRejects(t *testing.T) {
	mem := memory.New()
	defer mem.Close()
	ok := []limiter.Bucket{{Capacity: 5, Period: time.Second}}
	for _, c := range []struct {
		name    string
		store   storage.Store
		buckets []limiter.Bucket
		opts    []limiter.Option
		want    error
	}{
		{"nil store", nil, ok, nil, limiter.ErrNilStore},
		{"nil *memory.Store", (*memory.Store)(nil), ok, nil, limiter.ErrNilStore},
		{"no buckets", mem, nil, nil, limiter.ErrInvalidBucket},
		{"zero capacity", mem, []limiter.Bucket{{Capacity: 0, Period: time.Second}}, nil, limiter.ErrInvalidBucket},
		{"negative capacity", mem, []limiter.Bucket{{Capacity: -1, Period: time.Second}}, nil, limiter.ErrInvalidBucket},
		{"capacity too large", mem, []limiter.Bucket{{Capacity: limiter.MaxCapacity + 1, Period: time.Second}}, nil, limiter.ErrInvalidBucket},
		{"zero period", mem, []limiter.Bucket{{Capacity: 1}}, nil, limiter.ErrInvalidBucket},
		{"negative period", mem, []limiter.Bucket{{Capacity: 1, Period: -time.Second}}, nil, limiter.ErrInvalidBucket},
		{"period too long", mem, []limiter.Bucket{{Capacity: 1, Period: limiter.MaxPeriod + 1}}, nil, limiter.ErrInvalidBucket},
		{"duplicate", mem, []limiter.Bucket{ok[0], {Capacity: 9, Period: time.Hour}, ok[0]}, nil, limiter.ErrInvalidBucket},
		{"too many", mem, make([]limiter.Bucket, limiter.MaxBuckets+1), nil, limiter.ErrInvalidBucket},
		{"empty name", mem, ok, []limiter.Option{limiter.WithName("")}, limiter.ErrInvalidOption},
		{"name with colon", mem, ok, []limiter.Option{limiter.WithName("a:b")}, limiter.ErrInvalidOption},
		{"name with space", mem, ok, []limiter.Option{limiter.WithName("a b")}, limiter.ErrInvalidOption},
		{"long name", mem, ok, []limiter.Option{limiter.WithName(strings.Repeat("n", limiter.MaxNameLen+1))}, limiter.ErrInvalidOption},
		{"nil clock", mem, ok, []limiter.Option{limiter.WithClock(nil)}, limiter.ErrInvalidOption},
		{"nil clock func", mem, ok, []limiter.Option{limiter.WithClock((func() time.Time)(nil))}, limiter.ErrInvalidOption},
		{"not a clock", mem, ok, []limiter.Option{limiter.WithClock(time.Second)}, limiter.ErrInvalidOption},
		{"nil clock pointer", mem, ok, []limiter.Option{limiter.WithClock((*fakeclock.Clock)(nil))}, limiter.ErrInvalidOption},
		{"nil observer pointer", mem, ok, []limiter.Option{limiter.WithObserver((*recorder)(nil))}, limiter.ErrInvalidOption},
		{"negative cache", mem, ok, []limiter.Option{limiter.WithCacheSize(-1)}, limiter.ErrInvalidOption},
		{"zero Limiter as the fallback", mem, ok, []limiter.Option{limiter.WithFallback(&limiter.Limiter{})}, limiter.ErrInvalidOption},
		{"fallback with a fallback", mem, ok, []limiter.Option{limiter.WithFallback(withFallback(t, mem))}, limiter.ErrInvalidOption},
	} {
		lim, err := limiter.New(c.store, c.buckets, c.opts...)
		if !errors.Is(err, c.want) || lim != nil {
			t.Errorf("%s: New = %v, %v; want nil, %v", c.name, lim, err, c.want)
		}
	}
	if _, err := limiter.New(mem, ok, limiter.WithName(strings.Repeat("n", limiter.MaxNameLen))); err != nil {
		t.Errorf("New with a name of MaxNameLen bytes: %v", err)
	}
	if _, err := limiter.New(mem, ok, nil, limiter.WithName("nil-option")); err != nil {
		t.Errorf("New with a nil Option, which sets nothing: %v", err)
	}
	if _, err := limiter.New(mem, ok, limiter.WithObserver(nil)); err != nil {
		t.Errorf("New with WithObserver(nil), no observer: %v", err)
	}
	if _, err := limiter.New(mem, ok, limiter.WithObserver(observers(nil))); err != nil {
		t.Errorf("New with a nil slice of observers, a usable Observer: %v", err)
	}
}

func TestCallsReject(t *testing.T) {
	lim, fs, _ := faulty(t, []limiter.Bucket{{Capacity: 5, Period: time.Second}, {Capacity: 3, Period: time.Hour}})
	ctx := context.Background()
	for _, c := range []struct {
		key  string
		cost int64
		want error
	}{
		{"", 1, limiter.ErrInvalidKey},
		{strings.Repeat("k", limiter.MaxKeyLen+1), 1, limiter.ErrInvalidKey},
		{"k", 0, limiter.ErrInvalidCost},
		{"k", -1, limiter.ErrInvalidCost},
		{"k", 4, limiter.ErrCostExceedsCapacity}, // the smallest bucket holds 3
	} {
		if _, err := lim.AllowN(ctx, c.key, c.cost); !errors.Is(err, c.want) {
			t.Errorf("AllowN(%.20q, %d) = %v, want %v", c.key, c.cost, err, c.want)
		}
		if c.cost == 1 {
			if _, err := lim.Peek(ctx, c.key); !errors.Is(err, c.want) {
				t.Errorf("Peek(%.20q) = %v, want %v", c.key, err, c.want)
			}
			if err := lim.Reset(ctx, c.key); !errors.Is(err, c.want) {
				t.Errorf("Reset(%.20q) = %v, want %v", c.key, err, c.want)
			}
			if err := lim.Wait(ctx, c.key); !errors.Is(err, c.want) {
				t.Errorf("Wait(%.20q) = %v, want %v", c.key, err, c.want)
			}
		}
	}
	if got := fs.Calls(); got != (faultstore.Counts{}) {
		t.Errorf("refused calls reached the store: %+v", got)
	}
	if d, err := lim.AllowN(ctx, strings.Repeat("k", limiter.MaxKeyLen), 3); err != nil || !d.Allowed {
		t.Errorf("AllowN with a key of MaxKeyLen bytes and cost = smallest capacity: %+v, %v", d, err)
	}
}

// TestHotKeyOneStoreCall: after the first call, a key costs one
// CompareAndSwap per allowed decision and no Get, and an exhausted key is
// denied from the cache without calling the store.
// WithClock takes a Clock or a func() time.Time (time.Now, a manual
// clock's Now), and Wait on a clock with no After method wakes soon after
// a test advances it.
func TestWithClockFunc(t *testing.T) {
	mem := memory.New()
	t.Cleanup(func() { mem.Close() })
	b := []limiter.Bucket{{Capacity: 1, Period: time.Hour}}
	if _, err := limiter.New(mem, b, limiter.WithClock(time.Now)); err != nil {
		t.Fatalf("WithClock(time.Now): %v", err)
	}
	var mu sync.Mutex
	now := t0
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	lim, err := limiter.New(mem, b, limiter.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if d, err := lim.Allow(ctx, "k"); err != nil || !d.Allowed {
		t.Fatalf("first Allow = %+v, %v", d, err)
	}
	if d, err := lim.Allow(ctx, "k"); err != nil || d.Allowed || d.RetryAfter != time.Hour {
		t.Fatalf("second Allow = %+v, %v; want a denial for an hour on the given clock", d, err)
	}
	done := make(chan error, 1)
	go func() { done <- lim.Wait(ctx, "k") }()
	select {
	case err := <-done:
		t.Fatalf("Wait returned %v before the clock moved", err)
	case <-time.After(100 * time.Millisecond):
	}
	mu.Lock()
	now = now.Add(time.Hour)
	mu.Unlock()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait still sleeping 10s after the clock passed the wait")
	}
}

// Keys may hold any bytes: each is its own limit.
func TestKeysOfAnyBytes(t *testing.T) {
	lim, _, _ := faulty(t, []limiter.Bucket{{Capacity: 1, Period: time.Hour}})
	ctx := context.Background()
	for _, key := range []string{"a\x00b", "a", "\x00", "\xff\xfe", "a\x00"} {
		if d, err := lim.Allow(ctx, key); err != nil || !d.Allowed {
			t.Errorf("first Allow(%q) = %+v, %v; want allowed", key, d, err)
		}
		if d, err := lim.Allow(ctx, key); err != nil || d.Allowed {
			t.Errorf("second Allow(%q) = %+v, %v; want denied", key, d, err)
		}
	}
}

func TestHotKeyOneStoreCall(t *testing.T) {
	lim, fs, clock := faulty(t, []limiter.Bucket{{Capacity: 10, Period: 10 * time.Second}})
	ctx := context.Background()
	for i := range 10 {
		if d, err := lim.Allow(ctx, "hot"); err != nil || !d.Allowed {
			t.Fatalf("call %d: %+v, %v", i, d, err)
		}
	}
	if got, want := fs.Calls(), (faultstore.Counts{CAS: 10}); got != want {
		t.Errorf("10 allowed calls made %+v store calls, want %+v", got, want)
	}
	fs.ResetCounts()
	for range 100 {
		d, err := lim.Allow(ctx, "hot")
		if err != nil || d.Allowed || d.RetryAfter != time.Second {
			t.Fatalf("exhausted key: %+v, %v; want denied, retry after 1s", d, err)
		}
	}
	if got := fs.Calls(); got != (faultstore.Counts{}) {
		t.Errorf("100 denials of an exhausted key made %+v store calls, want none", got)
	}
	clock.Advance(time.Second)
	if d, err := lim.Allow(ctx, "hot"); err != nil || !d.Allowed {
		t.Fatalf("after the refill: %+v, %v", d, err)
	}
	if got, want := fs.Calls(), (faultstore.Counts{CAS: 1}); got != want {
		t.Errorf("the call after the refill made %+v store calls, want %+v", got, want)
	}
}

// withFallback returns a limiter over store with a fallback of its own.
func withFallback(t *testing.T, store storage.Store) *limiter.Limiter {
	t.Helper()
	b := []limiter.Bucket{{Capacity: 5, Period: time.Second}}
	inner, err := limiter.New(store, b)
	if err != nil {
		t.Fatal(err)
	}
	lim, err := limiter.New(store, b, limiter.WithFallback(inner))
	if err != nil {
		t.Fatal(err)
	}
	return lim
}

// TestZeroLimiter: the methods of a Limiter not made by New fail with
// ErrNilStore rather than panic.
func TestZeroLimiter(t *testing.T) {
	var lim limiter.Limiter
	ctx := context.Background()
	calls := map[string]func() error{
		"Allow":  func() error { _, err := lim.Allow(ctx, "k"); return err },
		"AllowN": func() error { _, err := lim.AllowN(ctx, "k", 1); return err },
		"Peek":   func() error { _, err := lim.Peek(ctx, "k"); return err },
		"Wait":   func() error { return lim.Wait(ctx, "k") },
		"Refund": func() error { return lim.Refund(ctx, "k", 1) },
		"Reset":  func() error { return lim.Reset(ctx, "k") },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, limiter.ErrNilStore) {
			t.Errorf("%s on a zero Limiter: %v, want ErrNilStore", name, err)
		}
	}
	if b := lim.Buckets(); len(b) != 0 {
		t.Errorf("Buckets of a zero Limiter: %v, want none", b)
	}
	if f := lim.Fallback(); f != nil {
		t.Errorf("Fallback of a zero Limiter: %p, want nil", f)
	}
}

// TestDoneContextBeforeCachedDenial: a context done before the call fails
// it with ctx.Err() as it is, also on a key the cache could deny without
// the store.
func TestDoneContextBeforeCachedDenial(t *testing.T) {
	lim, fs, _ := faulty(t, []limiter.Bucket{{Capacity: 2, Period: time.Hour}})
	if d, err := lim.AllowN(context.Background(), "k", 2); err != nil || !d.Allowed {
		t.Fatalf("draining the key: %+v, %v", d, err)
	}
	if d, err := lim.Allow(context.Background(), "k"); err != nil || d.Allowed {
		t.Fatalf("exhausted key: %+v, %v; want a denial", d, err)
	}
	fs.ResetCounts()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for name, call := range map[string]func() (limiter.Decision, error){
		"Allow":  func() (limiter.Decision, error) { return lim.Allow(ctx, "k") },
		"AllowN": func() (limiter.Decision, error) { return lim.AllowN(ctx, "k", 1) },
	} {
		if d, err := call(); err != context.Canceled || d != (limiter.Decision{}) {
			t.Errorf("%s with a cancelled context on an exhausted key: %+v, %v; want the zero Decision and context.Canceled", name, d, err)
		}
	}
	if err := lim.Wait(ctx, "k"); err != context.Canceled {
		t.Errorf("Wait with a cancelled context on an exhausted key: %v; want context.Canceled", err)
	}
	if got := fs.Calls(); got != (faultstore.Counts{}) {
		t.Errorf("calls with a cancelled context made %+v store calls, want none", got)
	}
}

// TestConflictRetriesFromReturnedRecord: another writer's conflicts are
// retried from the record that came back, with no Get, and too many give
// ErrContention with nothing taken.
func TestConflictRetriesFromReturnedRecord(t *testing.T) {
	lim, fs, _ := faulty(t, []limiter.Bucket{{Capacity: 5, Period: time.Hour}})
	ctx := context.Background()
	if _, err := lim.Allow(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	fs.ResetCounts()
	fs.ConflictNext(3)
	d, err := lim.Allow(ctx, "k")
	if err != nil || !d.Allowed || d.Remaining != 3 {
		t.Fatalf("after 3 conflicts: %+v, %v; want allowed with 3 left", d, err)
	}
	if got, want := fs.Calls(), (faultstore.Counts{CAS: 4}); got != want {
		t.Errorf("3 conflicts cost %+v store calls, want %+v", got, want)
	}
	fs.ConflictNext(1000)
	if _, err := lim.Allow(ctx, "k"); !errors.Is(err, limiter.ErrContention) {
		t.Fatalf("endless conflicts: %v, want ErrContention", err)
	}
	fs.ConflictNext(0)
	if d, err := lim.Peek(ctx, "k"); err != nil || d.Remaining != 3 {
		t.Errorf("after ErrContention: Peek = %+v, %v; want 3 left (nothing taken)", d, err)
	}
}

// TestStoreErrorsAreErrors: a failing store gives an error wrapping its
// cause, never a decision, and a lost reply never lets more through.
func TestStoreErrorsAreErrors(t *testing.T) {
	lim, fs, _ := faulty(t, []limiter.Bucket{{Capacity: 3, Period: time.Hour}})
	ctx := context.Background()
	fs.FailAll(storage.ErrUnavailable)
	for _, call := range map[string]func() error{
		"Allow": func() error { _, err := lim.Allow(ctx, "k"); return err },
		"Peek":  func() error { _, err := lim.Peek(ctx, "k"); return err },
		"Reset": func() error { return lim.Reset(ctx, "k") },
		"Wait":  func() error { return lim.Wait(ctx, "k") },
	} {
		if err := call(); !errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("with the store down: %v, want storage.ErrUnavailable", err)
		}
	}
	fs.FailAll(nil)

	// The first write lands but its reply is lost: the caller gets an
	// error, and only the 2 tokens left can be had afterwards.
	fs.AmbiguousNext(1)
	if _, err := lim.Allow(ctx, "k"); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("lost reply: %v, want storage.ErrUnavailable", err)
	}
	var got int
	for range 10 {
		d, err := lim.Allow(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			got++
		}
	}
	if got != 2 {
		t.Errorf("after a lost reply, %d calls admitted, want 2", got)
	}
}

// A store's error that does not say it is the store's (a store of another
// kind, or one closed) still matches storage.ErrUnavailable, and its own
// error, for every method, in process or not.
func TestStoreErrorsMatchUnavailable(t *testing.T) {
	ctx := context.Background()
	boom := errors.New("boom")
	lim, fs, _ := faulty(t, []limiter.Bucket{{Capacity: 3, Period: time.Hour}})
	fs.FailAll(boom)
	mem := memory.New()
	local, err := limiter.New(mem, []limiter.Bucket{{Capacity: 3, Period: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	mem.Close()
	for name, c := range map[string]struct {
		lim  *limiter.Limiter
		want error
	}{"failing store": {lim, boom}, "closed in-process store": {local, storage.ErrClosed}} {
		for method, call := range map[string]func() error{
			"Allow":  func() error { _, err := c.lim.Allow(ctx, "k"); return err },
			"Peek":   func() error { _, err := c.lim.Peek(ctx, "k"); return err },
			"Refund": func() error { return c.lim.Refund(ctx, "k", 1) },
			"Reset":  func() error { return c.lim.Reset(ctx, "k") },
		} {
			if err := call(); !errors.Is(err, storage.ErrUnavailable) || !errors.Is(err, c.want) {
				t.Errorf("%s, %s: %v; want it to match storage.ErrUnavailable and %v", name, method, err, c.want)
			}
		}
	}
}

// TestBatching: calls on one key that arrive while a store call is in
// flight are decided together in one CompareAndSwap, exactly.
func TestBatching(t *testing.T) {
	lim, fs, _ := faulty(t, []limiter.Bucket{{Capacity: 1000, Period: time.Hour}})
	fs.SetLatency(2 * time.Millisecond)
	var wg sync.WaitGroup
	var allowed atomic.Int64
	for range 64 {
		wg.Go(func() {
			for range 10 {
				d, err := lim.Allow(context.Background(), "hot")
				if err != nil {
					t.Error(err)
					return
				}
				if d.Allowed {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if got := allowed.Load(); got != 640 {
		t.Errorf("admitted %d of 640 calls with capacity 1000", got)
	}
	calls := fs.Calls()
	if calls.Get != 0 || calls.CAS > 320 {
		t.Errorf("640 calls made %+v store calls, want no Get and at most 320 CompareAndSwaps (batched)", calls)
	}
	if d, err := lim.Peek(context.Background(), "hot"); err != nil || d.Remaining != 360 {
		t.Errorf("Peek after 640 calls = %+v, %v; want 360 left", d, err)
	}
	t.Logf("640 calls from 64 goroutines: %d compare-and-swaps", calls.CAS)
}

// TestBatchDecisionsInArrivalOrder: a batch gives each caller its own
// exact decision, in arrival order.
func TestBatchDecisionsInArrivalOrder(t *testing.T) {
	lim, fs, _ := faulty(t, []limiter.Bucket{{Capacity: 5, Period: 10 * time.Second}})
	ctx := context.Background()
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	fs.Hook(func(op faultstore.Op, key string) {
		if op == faultstore.OpCAS {
			select {
			case entered <- struct{}{}:
				<-release
			default:
			}
		}
	})
	leader := make(chan limiter.Decision)
	go func() {
		d, err := lim.AllowN(ctx, "k", 2)
		if err != nil {
			t.Error(err)
		}
		leader <- d
	}()
	<-entered // the leader's store call is in flight
	// Queue costs 2, 2, 1 one after the other.
	results := make([]chan limiter.Decision, 3)
	for i, cost := range []int64{2, 2, 1} {
		results[i] = make(chan limiter.Decision)
		go func() {
			d, err := lim.AllowN(ctx, "k", cost)
			if err != nil {
				t.Error(err)
			}
			results[i] <- d
		}()
		waitQueued(t, lim, i+1)
	}
	entered <- struct{}{} // the next CAS (the batch) passes the hook
	close(release)
	if d := <-leader; !d.Allowed || d.Remaining != 3 {
		t.Errorf("leader: %+v, want allowed with 3 left", d)
	}
	want := []limiter.Decision{
		{Allowed: true, Limit: 5, Remaining: 1, ResetAfter: 8 * time.Second},
		{Limit: 5, Remaining: 1, RetryAfter: 2 * time.Second, ResetAfter: 8 * time.Second},
		{Allowed: true, Limit: 5, Remaining: 0, ResetAfter: 10 * time.Second},
	}
	for i, ch := range results {
		if d := <-ch; d != want[i] {
			t.Errorf("queued call %d: %+v, want %+v", i, d, want[i])
		}
	}
	if got := fs.Calls().CAS; got != 2 {
		t.Errorf("leader and batch made %d compare-and-swaps, want 2", got)
	}
}

// waitQueued waits until n calls wait on a key of lim, as reported by the
// limiter's Pending test hook.
func waitQueued(t *testing.T, lim *limiter.Limiter, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for limiter.Pending(lim, "k") < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls never queued", n)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// TestQueuedCallerLeaves: a caller whose context ends while it waits for
// another's store call returns at once, and is not counted.
func TestQueuedCallerLeaves(t *testing.T) {
	lim, fs, _ := faulty(t, []limiter.Bucket{{Capacity: 5, Period: time.Hour}})
	release := make(chan struct{})
	fs.Hook(func(op faultstore.Op, key string) {
		if op == faultstore.OpCAS {
			<-release
		}
	})
	done := make(chan error)
	go func() { _, err := lim.Allow(context.Background(), "k"); done <- err }()
	for fs.Calls().CAS == 0 {
		time.Sleep(100 * time.Microsecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	left := make(chan error)
	go func() { _, err := lim.AllowN(ctx, "k", 4); left <- err }()
	waitQueued(t, lim, 1)
	cancel()
	if err := <-left; !errors.Is(err, context.Canceled) {
		t.Errorf("queued caller with a cancelled context: %v, want context.Canceled", err)
	}
	if n := limiter.Pending(lim, "k"); n != 0 {
		t.Errorf("%d calls queued after the only queued caller left, want 0", n)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d, err := lim.Peek(context.Background(), "k"); err != nil || d.Remaining != 4 {
		t.Errorf("Peek = %+v, %v; want 4 left (the cancelled cost 4 not taken)", d, err)
	}
}

// TestLeaderContextDoesNotFailOthers: when the caller whose store call is
// in flight gives up, the calls batched behind it are decided by another.
func TestLeaderContextDoesNotFailOthers(t *testing.T) {
	lim, fs, _ := faulty(t, []limiter.Bucket{{Capacity: 5, Period: time.Hour}})
	var first atomic.Bool
	release := make(chan struct{})
	fs.Hook(func(op faultstore.Op, key string) {
		if op == faultstore.OpCAS && first.CompareAndSwap(false, true) {
			<-release
		}
	})
	fs.SetLatency(time.Millisecond) // lets a done context win in the store
	ctx, cancel := context.WithCancel(context.Background())
	leaderErr := make(chan error)
	go func() { _, err := lim.Allow(ctx, "k"); leaderErr <- err }()
	for fs.Calls().CAS == 0 {
		time.Sleep(100 * time.Microsecond)
	}
	other := make(chan limiter.Decision)
	go func() {
		d, err := lim.Allow(context.Background(), "k")
		if err != nil {
			t.Error(err)
		}
		other <- d
	}()
	waitQueued(t, lim, 1)
	cancel()
	close(release)
	if err := <-leaderErr; !errors.Is(err, context.Canceled) {
		t.Errorf("leader: %v, want context.Canceled", err)
	}
	if d := <-other; !d.Allowed || d.Remaining != 4 {
		t.Errorf("the other caller: %+v, want allowed with 4 left", d)
	}
}

// TestResetForgetsCache: Reset makes an exhausted key usable at once, even
// though its denial was being served from the cache.
func TestResetForgetsCache(t *testing.T) {
	lim, _, _ := faulty(t, []limiter.Bucket{{Capacity: 1, Period: time.Hour}})
	ctx := context.Background()
	lim.Allow(ctx, "k")
	if d, _ := lim.Allow(ctx, "k"); d.Allowed {
		t.Fatal("second call allowed")
	}
	if err := lim.Reset(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if d, err := lim.Allow(ctx, "k"); err != nil || !d.Allowed {
		t.Errorf("after Reset: %+v, %v; want allowed", d, err)
	}
}

// TestCorruptRecordNamesKey: a record that does not decode is an error
// naming the key, and is left as it is.
func TestCorruptRecordNamesKey(t *testing.T) {
	lim, fs, _ := faulty(t, []limiter.Bucket{{Capacity: 1, Period: time.Hour}})
	ctx := context.Background()
	fs.CompareAndSwap(ctx, "1/1h:user:7", 0, []byte{1, 2}, time.Hour) // the default namespace
	_, err := lim.Allow(ctx, "user:7")
	if !errors.Is(err, storage.ErrCorrupt) || !strings.Contains(err.Error(), `"1/1h:user:7"`) {
		t.Errorf("Allow on a truncated record: %v", err)
	}
}

// TestCacheBounded: a limiter touched by many keys keeps at most its cache
// size of them, and stays exact.
func TestCacheBounded(t *testing.T) {
	lim, _, _ := faulty(t, []limiter.Bucket{{Capacity: 1, Period: time.Hour}}, limiter.WithCacheSize(64))
	ctx := context.Background()
	for i := range 1000 {
		key := fmt.Sprintf("key-%d", i)
		if d, err := lim.Allow(ctx, key); err != nil || !d.Allowed {
			t.Fatalf("first call on %q: %+v, %v", key, d, err)
		}
	}
	if n := limiter.CachedKeys(lim); n > 64+64 {
		t.Errorf("%d keys cached, want about 64", n)
	}
	// Evicted keys are still limited: the store remembers them.
	if d, err := lim.Allow(ctx, "key-0"); err != nil || d.Allowed {
		t.Errorf("second call on an evicted key: %+v, %v; want denied", d, err)
	}
}

// TestNameWithOtherBuckets: limiters that share a name but not their
// buckets each enforce their own limit; neither resets the other.
func TestNameWithOtherBuckets(t *testing.T) {
	mem := memory.New()
	defer mem.Close()
	clock := fakeclock.New(t0)
	var lims []*limiter.Limiter
	for _, c := range []int64{5, 6} {
		lim, err := limiter.New(mem, []limiter.Bucket{{Capacity: c, Period: time.Hour}}, limiter.WithName("login"), limiter.WithClock(clock))
		if err != nil {
			t.Fatal(err)
		}
		lims = append(lims, lim)
	}
	admitted := 0
	for i := range 100 {
		d, err := lims[i%2].Allow(context.Background(), "k")
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			admitted++
		}
	}
	if admitted != 11 {
		t.Errorf("5/h and 6/h under one name, alternating: admitted %d, want 11 (each its own limit)", admitted)
	}
}

// TestExpiredRecordOneCall: a key whose cached record has outlived its
// time to live is known to be absent, so its next decision costs one
// compare-and-swap, not a lost one and a retry.
func TestExpiredRecordOneCall(t *testing.T) {
	mem := memory.New()
	defer mem.Close()
	fs := faultstore.New(mem)
	lim, err := limiter.New(fs, []limiter.Bucket{{Capacity: 1, Period: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if d, err := lim.Allow(ctx, "k"); err != nil || !d.Allowed {
		t.Fatalf("first call: %+v, %v", d, err)
	}
	time.Sleep(1100 * time.Millisecond) // the record's time to live: 1ms + 1s
	fs.ResetCounts()
	if d, err := lim.Allow(ctx, "k"); err != nil || !d.Allowed {
		t.Fatalf("after expiry: %+v, %v", d, err)
	}
	if got, want := fs.Calls(), (faultstore.Counts{CAS: 1}); got != want {
		t.Errorf("a decision after the record expired made %+v store calls, want %+v", got, want)
	}
}

// Wait fails at once, without waiting, when the context's deadline comes
// before the token would, even by a second; with a second to spare it
// waits and takes the token.
func TestWaitDeadlineBoundary(t *testing.T) {
	for _, c := range []struct {
		budget time.Duration
		waits  bool
	}{
		{59 * time.Second, false},
		{61 * time.Second, true},
	} {
		t.Run(c.budget.String(), func(t *testing.T) {
			mem := memory.New()
			defer mem.Close()
			clock := fakeclock.New(t0)
			lim, err := limiter.New(mem, []limiter.Bucket{{Capacity: 1, Period: time.Minute}}, limiter.WithClock(clock))
			if err != nil {
				t.Fatal(err)
			}
			if d, err := lim.Allow(t.Context(), "k"); err != nil || !d.Allowed {
				t.Fatalf("first Allow = %+v, %v", d, err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), c.budget)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- lim.Wait(ctx, "k") }()
			if !c.waits {
				// Either Wait returns, or it registered a wait on the
				// clock that it cannot finish before its deadline.
				for {
					select {
					case err := <-done:
						if !errors.Is(err, context.DeadlineExceeded) {
							t.Fatalf("Wait with %v left for a 60s wait = %v, want an error wrapping context.DeadlineExceeded", c.budget, err)
						}
						return
					default:
					}
					if clock.Waiters() > 0 {
						t.Fatalf("Wait with %v left began a 60s wait instead of failing at once", c.budget)
					}
					time.Sleep(time.Millisecond)
				}
			}
			clock.BlockUntil(1)
			clock.Advance(time.Minute)
			if err := <-done; err != nil {
				t.Fatalf("Wait with %v left for a 60s wait = %v, want nil", c.budget, err)
			}
		})
	}
}

// Buckets come back in the canonical order (by Period, then Capacity)
// whatever order they were given in, and that order names the default
// namespace in the store: processes that list the same buckets in another
// order share their counts.
func TestCanonicalOrderNamesTheStore(t *testing.T) {
	mem := memory.New()
	defer mem.Close()
	lim, err := limiter.New(mem, []limiter.Bucket{{Capacity: 100, Period: time.Hour}, {Capacity: 5, Period: 10 * time.Second}, {Capacity: 50, Period: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	want := []limiter.Bucket{{Capacity: 5, Period: 10 * time.Second}, {Capacity: 50, Period: time.Hour}, {Capacity: 100, Period: time.Hour}}
	if got := lim.Buckets(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Buckets() = %v, want %v", got, want)
	}
	if _, err := lim.Allow(t.Context(), "k"); err != nil {
		t.Fatal(err)
	}
	if rec, err := mem.Get(t.Context(), "5/10s,50/1h,100/1h:k"); err != nil || rec.Version == 0 {
		t.Fatalf("Get of the default namespace's key = %+v, %v; want the record Allow wrote", rec, err)
	}
	other, err := limiter.New(mem, []limiter.Bucket{{Capacity: 50, Period: time.Hour}, {Capacity: 5, Period: 10 * time.Second}, {Capacity: 100, Period: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	if d, err := other.Peek(t.Context(), "k"); err != nil || d.Remaining != 4 {
		t.Fatalf("Peek by a limiter given the same buckets in another order = %+v, %v; want 4 left", d, err)
	}
}

// observers is an Observer that tells each of its own; a nil one tells
// nobody, and is a usable Observer.
type observers []limiter.Observer

func (os observers) OnDecision(e limiter.Event) {
	for _, o := range os {
		o.OnDecision(e)
	}
}

func (os observers) OnError(e limiter.Event) {
	for _, o := range os {
		o.OnError(e)
	}
}
