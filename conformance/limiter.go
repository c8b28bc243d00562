package conformance

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
	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/storage"
)

// RunLimiter proves that a limiter built on the stores that factory
// returns keeps the semantics documented in package limiter: exact
// admission counts, all-or-nothing across buckets, Decision fields to the
// nanosecond, Peek, Reset, Wait, time going backwards, and exact counts
// under concurrent use from one and from two store handles, and, for a
// driver that implements storage.TimedStore, that the backend's time it
// reports follows real time and lets limiters with skewed clocks share one
// exact limit. Time comes from a manual clock; periods are long enough
// (10s and more) that the store's real expiry never interferes.
func RunLimiter[F Factory](t *testing.T, factory F) {
	t.Helper()
	newStore := asNewStore(factory)
	if newStore == nil {
		t.Fatal("conformance: RunLimiter: nil factory")
	}
	for _, c := range limiterChecks {
		t.Run(c.name, func(t *testing.T) {
			// A broken driver can make a check spin for ever (swaps that
			// report false make Wait retry for good): its context is
			// cancelled after checkTimeout. It gets no deadline, so that
			// Wait's path without one is still the one tested.
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			stop := time.AfterFunc(checkTimeout, cancel)
			defer stop.Stop()
			err := c.check(ctx, t, newStore)
			if errors.Is(err, errNotApplicable) {
				t.Skip(err)
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

type limiterCheck struct {
	name  string
	check func(ctx context.Context, t testing.TB, newStore NewStore) error
}

var limiterChecks = []limiterCheck{
	{"ExactDecisions", checkExactDecisions},
	{"AdmitsCPlusRefill", checkAdmitsCPlusRefill},
	{"MultiBucketAllOrNothing", checkMultiBucket},
	{"PeekConsumesNothing", checkPeek},
	{"Reset", checkReset},
	{"WaitWithoutDeadline", checkWaitNoDeadline},
	{"WaitFailsAtOnceOnUnmeetableDeadline", checkWaitDeadline},
	{"ClockBackwards", checkClockBackwards},
	{"KeysAndNamesAreSeparate", checkSeparation},
	{"ConcurrentOneKeyExact", checkConcurrentOneKey},
	{"TwoHandlesShareExactly", checkTwoHandles},
	{"CorruptRecordIsAnError", checkCorrupt},
	{"Refund", checkRefund},
	{"RefundConcurrentExact", checkRefundConcurrent},
	{"StoreClockSharesAcrossSkew", checkStoreClock},
}

// errNotApplicable marks a check that does not apply to the store (it
// lacks an optional interface); the subtest is skipped.
var errNotApplicable = errors.New("not applicable")

// t0 is the manual clock's start: any fixed time works.
var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

// harness is a limiter on a fresh store with a manual clock.
type harness struct {
	ctx   context.Context
	clock *fakeclock.Clock
	store storage.Store
	lim   *limiter.Limiter
}

func newHarness(ctx context.Context, tb testing.TB, newStore NewStore, buckets ...limiter.Bucket) (*harness, error) {
	h := &harness{ctx: ctx, clock: fakeclock.New(t0), store: newStore(tb)}
	var err error
	h.lim, err = limiter.New(h.store, buckets, limiter.WithName("conformance"), limiter.WithClock(h.clock))
	return h, err
}

// step is one call and the decision it must give. cost 0 means Peek.
type step struct {
	at   time.Duration // clock offset from t0
	cost int64
	want limiter.Decision
}

// run plays steps on key and reports the first that differs.
func (h *harness) run(key string, steps []step) error {
	for i, s := range steps {
		h.clock.Set(t0.Add(s.at))
		var d limiter.Decision
		var err error
		if s.cost == 0 {
			d, err = h.lim.Peek(h.ctx, key)
		} else {
			d, err = h.lim.AllowN(h.ctx, key, s.cost)
		}
		if err != nil {
			return fmt.Errorf("step %d: at %v cost %d: %w", i, s.at, s.cost, err)
		}
		if d != s.want {
			return fmt.Errorf("step %d: at %v AllowN(%q, %d) = %+v, want %+v", i, s.at, key, s.cost, d, s.want)
		}
	}
	return nil
}

func allowed(limit, remaining int64, reset time.Duration) limiter.Decision {
	return limiter.Decision{Allowed: true, Limit: limit, Remaining: remaining, ResetAfter: reset}
}

func denied(limit, remaining int64, retry, reset time.Duration) limiter.Decision {
	return limiter.Decision{Limit: limit, Remaining: remaining, RetryAfter: retry, ResetAfter: reset}
}

func checkExactDecisions(ctx context.Context, tb testing.TB, newStore NewStore) error {
	h, err := newHarness(ctx, tb, newStore, limiter.Bucket{Capacity: 5, Period: 10 * time.Second})
	if err != nil {
		return err
	}
	s := time.Second
	return h.run("user:42", []step{
		{0, 1, allowed(5, 4, 2*s)},
		{0, 1, allowed(5, 3, 4*s)},
		{0, 2, allowed(5, 1, 8*s)},
		{0, 1, allowed(5, 0, 10*s)},
		{0, 1, denied(5, 0, 2*s, 10*s)},
		{0, 3, denied(5, 0, 6*s, 10*s)},
		{s, 1, denied(5, 0, s, 9*s)},
		{2*s - 1, 1, denied(5, 0, 1, 8*s+1)},
		{2 * s, 1, allowed(5, 0, 10*s)},
		{5 * s, 1, allowed(5, 0, 9*s)}, // 1.5 tokens refilled, half carried
		{6 * s, 1, allowed(5, 0, 10*s)},
		{6 * s, 1, denied(5, 0, 2*s, 10*s)},
		{time.Hour, 5, allowed(5, 0, 10*s)},
	})
}

// checkAdmitsCPlusRefill asks as fast as it can on a moving clock: by time
// t exactly C + floor(t*C/P) calls pass.
func checkAdmitsCPlusRefill(ctx context.Context, tb testing.TB, newStore NewStore) error {
	b := limiter.Bucket{Capacity: 7, Period: 30 * time.Second}
	h, err := newHarness(ctx, tb, newStore, b)
	if err != nil {
		return err
	}
	var admitted int64
	for at := time.Duration(0); at <= 2*time.Minute; at += 1300 * time.Millisecond {
		h.clock.Set(t0.Add(at))
		for {
			d, err := h.lim.Allow(h.ctx, "k")
			if err != nil {
				return err
			}
			if !d.Allowed {
				break
			}
			admitted++
		}
		if want := b.Capacity + int64(at)*b.Capacity/int64(b.Period); admitted != want {
			return fmt.Errorf("by %v admitted %d, want %d", at, admitted, want)
		}
	}
	return nil
}

func checkMultiBucket(ctx context.Context, tb testing.TB, newStore NewStore) error {
	// 1 per 10s and 3 per hour: a call passes only if both can pay.
	h, err := newHarness(ctx, tb, newStore,
		limiter.Bucket{Capacity: 3, Period: time.Hour},
		limiter.Bucket{Capacity: 1, Period: 10 * time.Second})
	if err != nil {
		return err
	}
	s := time.Second
	steps := []step{{0, 1, allowed(1, 0, 10*s)}}
	// Denied by the fast bucket: the slow one must not pay for them.
	for range 5 {
		steps = append(steps, step{0, 1, denied(1, 0, 10*s, 10*s)})
	}
	steps = append(steps,
		step{10 * s, 1, allowed(1, 0, 10*s)},
		// Both empty: the slower bucket binds, with 20s of refill carried.
		step{20 * s, 1, allowed(3, 0, 3580*s)},
		step{30 * s, 1, denied(3, 0, 1170*s, 3570*s)},
		step{30 * s, 0, denied(3, 0, 1170*s, 3570*s)})
	return h.run("k", steps)
}

func checkPeek(ctx context.Context, tb testing.TB, newStore NewStore) error {
	h, err := newHarness(ctx, tb, newStore, limiter.Bucket{Capacity: 5, Period: 10 * time.Second})
	if err != nil {
		return err
	}
	s := time.Second
	steps := []step{{0, 0, allowed(5, 5, 0)}, {0, 0, allowed(5, 5, 0)}, {0, 1, allowed(5, 4, 2*s)}}
	for range 3 {
		steps = append(steps, step{0, 0, allowed(5, 4, 2*s)})
	}
	steps = append(steps,
		step{0, 4, allowed(5, 0, 10*s)},
		step{0, 0, denied(5, 0, 2*s, 10*s)},
		step{3 * s, 0, allowed(5, 1, 7*s)},
		step{3 * s, 1, allowed(5, 0, 9*s)})
	return h.run("k", steps)
}

func checkReset(ctx context.Context, tb testing.TB, newStore NewStore) error {
	h, err := newHarness(ctx, tb, newStore, limiter.Bucket{Capacity: 3, Period: time.Minute})
	if err != nil {
		return err
	}
	if err := h.lim.Reset(h.ctx, "never-used"); err != nil {
		return fmt.Errorf("Reset of an unused key: %w", err)
	}
	if err := h.run("k", []step{{0, 3, allowed(3, 0, time.Minute)}, {0, 1, denied(3, 0, 20*time.Second, time.Minute)}}); err != nil {
		return err
	}
	if err := h.lim.Reset(h.ctx, "k"); err != nil {
		return fmt.Errorf("Reset: %w", err)
	}
	return h.run("k", []step{{0, 0, allowed(3, 3, 0)}, {0, 1, allowed(3, 2, 20*time.Second)}})
}

func checkWaitNoDeadline(ctx context.Context, tb testing.TB, newStore NewStore) error {
	h, err := newHarness(ctx, tb, newStore, limiter.Bucket{Capacity: 2, Period: 10 * time.Second})
	if err != nil {
		return err
	}
	if err := h.lim.Wait(h.ctx, "k"); err != nil {
		return fmt.Errorf("Wait on a full bucket: %w", err)
	}
	if err := h.run("k", []step{{0, 1, allowed(2, 0, 10*time.Second)}}); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- h.lim.Wait(h.ctx, "k") }()
	h.clock.BlockUntil(1) // Wait sleeps on the manual clock
	select {
	case err := <-done:
		return fmt.Errorf("Wait returned %v before any token refilled", err)
	default:
	}
	h.clock.Advance(5 * time.Second)
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("Wait after the refill: %w", err)
		}
	case <-time.After(10 * time.Second):
		return errors.New("Wait did not return 10s (real) after its token refilled")
	}
	// Wait took the token.
	return h.run("k", []step{{5 * time.Second, 0, denied(2, 0, 5*time.Second, 10*time.Second)}})
}

func checkWaitDeadline(ctx context.Context, tb testing.TB, newStore NewStore) error {
	h, err := newHarness(ctx, tb, newStore, limiter.Bucket{Capacity: 1, Period: time.Hour})
	if err != nil {
		return err
	}
	if _, err := h.lim.Allow(h.ctx, "k"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
	defer cancel()
	start := time.Now()
	err = h.lim.Wait(ctx, "k")
	if !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("Wait for an hour with 30s left = %v, want an error matching context.DeadlineExceeded", err)
	}
	if h.clock.Waiters() != 0 || time.Since(start) > 10*time.Second {
		return fmt.Errorf("Wait slept before failing (%v)", time.Since(start))
	}
	ctx, cancel = context.WithCancel(h.ctx)
	cancel()
	if err := h.lim.Wait(ctx, "k"); !errors.Is(err, context.Canceled) {
		return fmt.Errorf("Wait with a cancelled context = %v, want context.Canceled", err)
	}
	return nil
}

func checkClockBackwards(ctx context.Context, tb testing.TB, newStore NewStore) error {
	h, err := newHarness(ctx, tb, newStore, limiter.Bucket{Capacity: 2, Period: 20 * time.Second})
	if err != nil {
		return err
	}
	s := time.Second
	return h.run("k", []step{
		{10 * s, 2, allowed(2, 0, 20*s)},
		// The clock jumps 5s back: nothing refills, and waits count from
		// the latest time seen.
		{5 * s, 1, denied(2, 0, 15*s, 25*s)},
		{-time.Hour, 0, denied(2, 0, time.Hour+20*s, time.Hour+30*s)},
		{20 * s, 1, allowed(2, 0, 20*s)},
	})
}

func checkSeparation(ctx context.Context, tb testing.TB, newStore NewStore) error {
	store := newStore(tb)
	clock := fakeclock.New(t0)
	b := []limiter.Bucket{{Capacity: 1, Period: time.Hour}}
	a1, err := limiter.New(store, b, limiter.WithClock(clock))
	if err != nil {
		return err
	}
	a2, _ := limiter.New(store, b, limiter.WithClock(clock))
	named, _ := limiter.New(store, b, limiter.WithClock(clock), limiter.WithName("other"))
	for _, c := range []struct {
		lim  *limiter.Limiter
		key  string
		want bool
	}{
		{a1, "x", true},
		{a1, "y", true},     // another key
		{a2, "x", false},    // same buckets, no name: shared
		{named, "x", true},  // named apart
		{named, "x", false}, // and itself limited
		{a1, "X", true},     // keys that look alike stay apart
		{a1, "x y", true},
		{a1, "x:y", true},
		{a1, "{x}", true},
	} {
		d, err := c.lim.Allow(ctx, c.key)
		if err != nil {
			return err
		}
		if d.Allowed != c.want {
			return fmt.Errorf("Allow(%q) = %v, want %v", c.key, d.Allowed, c.want)
		}
	}
	return nil
}

// hammer runs goroutines over lims (round robin), each calling Allow on key
// attempts times, and returns how many were allowed and every error met
// (a goroutine stops at its first), minus those ignore accepts.
func hammer(ctx context.Context, lims []*limiter.Limiter, key string, goroutines, attempts int, ignore func(error) bool) (int64, error) {
	var allowed atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		lim := lims[g%len(lims)]
		wg.Go(func() {
			for range attempts {
				d, err := lim.Allow(ctx, key)
				if err != nil {
					errs <- err
					return
				}
				if d.Allowed {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	var kept []error
	for err := range errs {
		if ignore == nil || !ignore(err) {
			kept = append(kept, err)
		}
	}
	return allowed.Load(), errors.Join(kept...)
}

func checkConcurrentOneKey(ctx context.Context, tb testing.TB, newStore NewStore) error {
	h, err := newHarness(ctx, tb, newStore, limiter.Bucket{Capacity: 100, Period: time.Hour})
	if err != nil {
		return err
	}
	got, err := hammer(h.ctx, []*limiter.Limiter{h.lim}, "hot", 64, 10, nil)
	if err != nil {
		return err
	}
	if got != 100 {
		return fmt.Errorf("64 goroutines x 10 calls on capacity 100 admitted %d, want 100", got)
	}
	return nil
}

// twoHandles returns two limiters on one manual clock, each over its own
// handle on one backend.
func twoHandles(tb testing.TB, newStore NewStore, b limiter.Bucket) ([]*limiter.Limiter, error) {
	clock := fakeclock.New(t0)
	var lims []*limiter.Limiter
	for range 2 {
		lim, err := limiter.New(newStore(tb), []limiter.Bucket{b}, limiter.WithClock(clock))
		if err != nil {
			return nil, err
		}
		lims = append(lims, lim)
	}
	return lims, nil
}

func checkTwoHandles(ctx context.Context, tb testing.TB, newStore NewStore) error {
	lims, err := twoHandles(tb, newStore, limiter.Bucket{Capacity: 50, Period: time.Hour})
	if err != nil {
		return err
	}
	// Two handles may lose compare-and-swaps to each other past the
	// limiter's retries: ErrContention is allowed, any other error is not.
	contention := func(err error) bool { return errors.Is(err, limiter.ErrContention) }
	got, err := hammer(ctx, lims, "shared", 32, 6, contention)
	if err != nil {
		return err
	}
	if got != 50 {
		return fmt.Errorf("two handles, 32 goroutines x 6 calls on capacity 50 admitted %d, want 50", got)
	}
	return nil
}

func checkCorrupt(ctx context.Context, tb testing.TB, newStore NewStore) error {
	store := newStore(tb)
	// An unnamed limiter keeps key k under "<buckets>:k".
	lim, err := limiter.New(store, []limiter.Bucket{{Capacity: 5, Period: time.Minute}}, limiter.WithClock(fakeclock.New(t0)))
	if err != nil {
		return err
	}
	const key = "5/1m:broken"
	garbage := []byte("not a sluice record")
	if _, ok, err := store.CompareAndSwap(ctx, key, 0, garbage, time.Minute); err != nil || !ok {
		return fmt.Errorf("planting a corrupt record: swapped %v, %v", ok, err)
	}
	for _, call := range []func() error{
		func() error { _, err := lim.Allow(ctx, "broken"); return err },
		func() error { _, err := lim.Peek(ctx, "broken"); return err },
	} {
		err := call()
		if !errors.Is(err, storage.ErrCorrupt) || !strings.Contains(err.Error(), "broken") {
			return fmt.Errorf("a call on a corrupt record = %v, want an error matching storage.ErrCorrupt that names the key", err)
		}
	}
	rec, err := store.Get(ctx, key)
	if err != nil {
		return err
	}
	if string(rec.Value) != string(garbage) {
		return fmt.Errorf("the corrupt record was overwritten with %q", rec.Value)
	}
	return nil
}

func checkRefund(ctx context.Context, tb testing.TB, newStore NewStore) error {
	h, err := newHarness(ctx, tb, newStore, limiter.Bucket{Capacity: 5, Period: 10 * time.Second})
	if err != nil {
		return err
	}
	s := time.Second
	if err := h.run("k", []step{{0, 5, allowed(5, 0, 10*s)}, {0, 1, denied(5, 0, 2*s, 10*s)}}); err != nil {
		return err
	}
	if err := h.lim.Refund(h.ctx, "k", 2); err != nil {
		return fmt.Errorf("Refund(2): %w", err)
	}
	// The refund is seen at once, although the key was exhausted.
	if err := h.run("k", []step{{0, 0, allowed(5, 2, 6*s)}, {0, 1, allowed(5, 1, 8*s)}}); err != nil {
		return err
	}
	if err := h.lim.Refund(h.ctx, "k", 100); err != nil {
		return fmt.Errorf("Refund(100): %w", err)
	}
	if err := h.run("k", []step{{0, 0, allowed(5, 5, 0)}}); err != nil {
		return fmt.Errorf("a refund never fills above capacity: %w", err)
	}
	if err := h.lim.Refund(h.ctx, "fresh", 1); err != nil {
		return fmt.Errorf("Refund on an unused key: %w", err)
	}
	return h.run("fresh", []step{{0, 0, allowed(5, 5, 0)}})
}

// checkRefundConcurrent takes and refunds from many goroutines over two
// store handles: every token taken and given back must be there at the
// end.
func checkRefundConcurrent(ctx context.Context, tb testing.TB, newStore NewStore) error {
	lims, err := twoHandles(tb, newStore, limiter.Bucket{Capacity: 40, Period: time.Hour})
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	var kept atomic.Int64
	errs := make(chan error, 16)
	for g := range 16 {
		lim := lims[g%2]
		wg.Go(func() {
			for i := range 8 {
				d, err := lim.AllowN(ctx, "k", 2)
				if err == nil && d.Allowed {
					if i%2 == 0 {
						err = lim.Refund(ctx, "k", 2)
					}
					if i%2 != 0 || errors.Is(err, limiter.ErrContention) {
						kept.Add(2) // kept, or a refund that was not applied
					}
				}
				if err != nil && !errors.Is(err, limiter.ErrContention) {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	d, err := lims[0].Peek(ctx, "k")
	if err != nil {
		return err
	}
	if want := 40 - kept.Load(); d.Remaining != want {
		return fmt.Errorf("after concurrent takes and refunds: %d left, want %d (40 minus %d kept)", d.Remaining, want, kept.Load())
	}
	return nil
}

// checkTimesAdvance: the times a TimedStore reports follow real time. Two
// calls 200 ms apart report times that far apart, give or take the
// calls' own duration; a clock that stood still would never refill a
// bucket on the store's clock.
func checkTimesAdvance(ctx context.Context, ts storage.TimedStore) error {
	const pause = 200 * time.Millisecond
	before := time.Now()
	_, first, err := ts.GetTimed(ctx, "clock")
	if err != nil {
		return err
	}
	time.Sleep(pause)
	_, _, second, err := ts.CompareAndSwapTimed(ctx, "clock", 0, []byte("c"), longTTL)
	if err != nil {
		return err
	}
	_, third, err := ts.GetTimed(ctx, "clock")
	if err != nil {
		return err
	}
	spent := time.Since(before)
	// The backend's clock may be set apart from this one; its rate may
	// not, beyond the tolerance of its resolution (a microsecond or a
	// millisecond).
	if moved := second.Sub(first); moved < pause-10*time.Millisecond || moved > spent+10*time.Millisecond {
		return fmt.Errorf("the store's time moved %v between two calls %v apart (%v in all), want about %v", moved, pause, spent.Round(time.Millisecond), pause)
	}
	if third.Before(second) {
		return fmt.Errorf("the store's time went back from %v to %v between two calls", second, third)
	}
	return nil
}

// checkStoreClock runs two limiters whose clocks are 5s apart on a bucket
// of 3 per 15s (a token every 5s): on the store's clock they admit exactly
// 3 between them, as long as the check takes less than 5s of real time.
// (On their own clocks, the one 5s ahead would see a token more refilled,
// the error bound documented in package limiter.)
func checkStoreClock(ctx context.Context, tb testing.TB, newStore NewStore) error {
	store := newStore(tb)
	ts, ok := store.(storage.TimedStore)
	if !ok {
		return fmt.Errorf("%w: the store does not implement storage.TimedStore (this check is for stores that report a server's clock; an in-process store is its own clock)", errNotApplicable)
	}
	if err := checkTimesAdvance(ctx, ts); err != nil {
		return err
	}
	b := []limiter.Bucket{{Capacity: 3, Period: 15 * time.Second}}
	var lims []*limiter.Limiter
	for _, at := range []time.Time{t0, t0.Add(5 * time.Second)} {
		lim, err := limiter.New(newStore(tb), b, limiter.WithClock(fakeclock.New(at)), limiter.WithStoreClock())
		if err != nil {
			return err
		}
		lims = append(lims, lim)
	}
	start := time.Now()
	var admitted int
	for i := range 12 {
		d, err := lims[i%2].Allow(ctx, "k")
		if err != nil {
			return err
		}
		if d.Allowed {
			admitted++
		}
	}
	// Real time refills too: a token per 5s spent (only on a very slow
	// machine).
	if most := 3 + int(time.Since(start)/(5*time.Second)); admitted < 3 || admitted > most {
		return fmt.Errorf("two limiters 5s apart on the store clock admitted %d, want 3", admitted)
	}
	return nil
}
