package limiter_test

import (
	"context"
	"errors"
	"fmt"
	"math"
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

// recorder is an Observer that keeps what it is told.
type recorder struct {
	mu        sync.Mutex
	decisions []limiter.Event
	errors    []limiter.Event
}

func (r *recorder) OnDecision(e limiter.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.decisions = append(r.decisions, e)
}

func (r *recorder) OnError(e limiter.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, e)
}

func TestRefundRejects(t *testing.T) {
	lim, fs, _ := faulty(t, []limiter.Bucket{{Capacity: 5, Period: time.Hour}})
	ctx := context.Background()
	for _, n := range []int64{0, -1} {
		if err := lim.Refund(ctx, "k", n); !errors.Is(err, limiter.ErrInvalidCost) {
			t.Errorf("Refund(%d) = %v, want ErrInvalidCost", n, err)
		}
	}
	if err := lim.Refund(ctx, "", 1); !errors.Is(err, limiter.ErrInvalidKey) {
		t.Errorf("Refund with an empty key = %v, want ErrInvalidKey", err)
	}
	fs.FailAll(storage.ErrUnavailable)
	if err := lim.Refund(ctx, "k", 1); !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("Refund with the store down = %v, want storage.ErrUnavailable", err)
	}
}

func TestDryRun(t *testing.T) {
	rec := &recorder{}
	lim, _, _ := faulty(t, []limiter.Bucket{{Capacity: 1, Period: 10 * time.Second}}, limiter.WithDryRun(), limiter.WithObserver(rec))
	ctx := context.Background()
	for i, want := range []limiter.Decision{
		{Allowed: true, Limit: 1, ResetAfter: 10 * time.Second},
		{Allowed: true, DryRun: true, Limit: 1, RetryAfter: 10 * time.Second, ResetAfter: 10 * time.Second},
		{Allowed: true, DryRun: true, Limit: 1, RetryAfter: 10 * time.Second, ResetAfter: 10 * time.Second},
	} {
		if d, err := lim.Allow(ctx, "k"); err != nil || d != want {
			t.Errorf("call %d: %+v, %v; want %+v", i, d, err, want)
		}
	}
	if len(rec.decisions) != 3 || rec.decisions[1].Decision.Allowed || !rec.decisions[1].Cached || !rec.decisions[1].DryRun {
		t.Errorf("observer saw %+v; want the real denial, from the cache", rec.decisions)
	}
}

// A dry run's Peek reports the real state, whether the store or the
// fallback answers it.
func TestDryRunPeekWithFallback(t *testing.T) {
	local, err := limiter.New(memory.New(), []limiter.Bucket{{Capacity: 1, Period: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	lim, fs, _ := faulty(t, []limiter.Bucket{{Capacity: 1, Period: time.Hour}}, limiter.WithDryRun(), limiter.WithFallback(local))
	ctx := context.Background()
	fs.FailAll(storage.ErrUnavailable)
	if d, err := lim.Allow(ctx, "k"); err != nil || !d.Allowed || d.DryRun {
		t.Fatalf("first call, from the fallback: %+v, %v; want allowed", d, err)
	}
	d, err := lim.Peek(ctx, "k")
	if err != nil || d.Allowed || d.DryRun || d.RetryAfter < 59*time.Minute {
		t.Errorf("Peek from the fallback of a dry run: %+v, %v; want not allowed, no DryRun, RetryAfter about 1h", d, err)
	}
	if d, err := lim.Allow(ctx, "k"); err != nil || !d.Allowed || !d.DryRun {
		t.Errorf("Allow from the fallback of a dry run: %+v, %v; want allowed as a dry run", d, err)
	}
}

func TestObserver(t *testing.T) {
	rec := &recorder{}
	lim, fs, _ := faulty(t, []limiter.Bucket{{Capacity: 1, Period: time.Hour}}, limiter.WithObserver(rec))
	ctx := context.Background()
	lim.Allow(ctx, "k") // one compare-and-swap
	lim.Allow(ctx, "k") // denied from the cache
	fs.FailAll(storage.ErrUnavailable)
	lim.Peek(ctx, "k")
	lim.Reset(ctx, "k")
	if len(rec.decisions) != 2 || len(rec.errors) != 2 {
		t.Fatalf("observer saw %d decisions and %d errors, want 2 and 2", len(rec.decisions), len(rec.errors))
	}
	allowed, cached := rec.decisions[0], rec.decisions[1]
	if allowed.Method != "AllowN" || allowed.Key != "k" || allowed.Cost != 1 || !allowed.Decision.Allowed ||
		allowed.StoreCalls != 1 || allowed.Retries != 0 || allowed.Cached || allowed.Latency <= 0 {
		t.Errorf("allowed call: %+v", allowed)
	}
	if cached.Decision.Allowed || cached.StoreCalls != 0 || !cached.Cached {
		t.Errorf("cached denial: %+v", cached)
	}
	for i, method := range []string{"Peek", "Reset"} {
		if e := rec.errors[i]; e.Method != method || !errors.Is(e.Err, storage.ErrUnavailable) {
			t.Errorf("error %d: %+v, want %s with storage.ErrUnavailable", i, e, method)
		}
	}
}

// TestFallbackDryRunObserved: a fallback made WithDryRun allows what it
// would deny, and the limiter's observer still sees the real denial.
func TestFallbackDryRunObserved(t *testing.T) {
	mem := memory.New()
	defer mem.Close()
	local, err := limiter.New(mem, []limiter.Bucket{{Capacity: 1, Period: time.Hour}}, limiter.WithDryRun())
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	lim, fs, _ := faulty(t, []limiter.Bucket{{Capacity: 1, Period: time.Hour}}, limiter.WithFallback(local), limiter.WithObserver(rec))
	fs.FailAll(storage.ErrUnavailable)
	for i := range 2 {
		if d, err := lim.Allow(context.Background(), "k"); err != nil || !d.Allowed || d.DryRun != (i == 1) {
			t.Fatalf("call %d: %+v, %v; want allowed, DryRun on the second", i, d, err)
		}
	}
	if len(rec.decisions) != 2 {
		t.Fatalf("observer saw %d decisions, want 2", len(rec.decisions))
	}
	if e := rec.decisions[1]; e.Decision.Allowed || e.Decision.DryRun || !e.DryRun || !e.Fallback {
		t.Errorf("the second event: %+v; want the fallback's real denial, marked DryRun and Fallback", e)
	}
}

func TestFallback(t *testing.T) {
	local, err := limiter.New(memory.New(), []limiter.Bucket{{Capacity: 2, Period: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	lim, fs, _ := faulty(t, []limiter.Bucket{{Capacity: 2, Period: time.Hour}}, limiter.WithFallback(local), limiter.WithObserver(rec))
	fs.FailAll(storage.ErrUnavailable)
	ctx := context.Background()
	var got []bool
	for range 3 {
		d, err := lim.Allow(ctx, "k")
		if err != nil {
			t.Fatalf("with a fallback: %v", err)
		}
		got = append(got, d.Allowed)
	}
	if got[0] != true || got[1] != true || got[2] != false {
		t.Errorf("fallback decisions %v, want [true true false]", got)
	}
	for i, d := range rec.decisions {
		if !d.Decision.Fallback {
			t.Errorf("decision %d, made by the fallback: %+v, want Fallback set", i, d.Decision)
		}
	}
	if lim.Fallback() != local {
		t.Errorf("Fallback() = %p, want the limiter given to WithFallback, %p", lim.Fallback(), local)
	}
	if len(rec.errors) != 3 || len(rec.decisions) != 3 || !rec.decisions[0].Fallback {
		t.Errorf("observer: %d errors, decisions %+v; want 3 errors and 3 fallback decisions", len(rec.errors), rec.decisions)
	}
	fs.FailAll(nil)
	if d, err := lim.Allow(ctx, "k2"); err != nil || !d.Allowed || d.Fallback {
		t.Errorf("with the store back: %+v, %v; want allowed by the store, Fallback unset", d, err)
	}
	fs.FailAll(storage.ErrUnavailable)
	// A caller's own context is not the store's failure.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if d, err := lim.Allow(cancelled, "other"); err == nil {
		t.Errorf("with a cancelled context: %+v from the fallback, want the error", d)
	}
	if _, err := limiter.New(memory.New(), []limiter.Bucket{{Capacity: 1, Period: time.Hour}}, limiter.WithFallback(nil)); !errors.Is(err, limiter.ErrInvalidOption) {
		t.Errorf("WithFallback(nil): %v, want ErrInvalidOption", err)
	}
}

// timedStore reports a manual clock as its backend's time.
type timedStore struct {
	storage.Store
	clock *fakeclock.Clock
}

func (s timedStore) GetTimed(ctx context.Context, key string) (storage.Record, time.Time, error) {
	rec, err := s.Get(ctx, key)
	return rec, s.clock.Now(), err
}

func (s timedStore) CompareAndSwapTimed(ctx context.Context, key string, expected uint64, value []byte, ttl time.Duration) (storage.Record, bool, time.Time, error) {
	rec, ok, err := s.CompareAndSwap(ctx, key, expected, value, ttl)
	return rec, ok, s.clock.Now(), err
}

// TestStoreClock: two limiters whose clocks are 5s apart admit exactly
// the limit on the store's clock, and one token more on their own.
func TestStoreClock(t *testing.T) {
	mem := memory.New()
	defer mem.Close()
	if _, err := limiter.New(faultstore.New(mem), []limiter.Bucket{{Capacity: 1, Period: time.Second}}, limiter.WithStoreClock()); !errors.Is(err, limiter.ErrInvalidOption) {
		t.Errorf("WithStoreClock on a store without a clock: %v, want ErrInvalidOption", err)
	}
	// An in-process store's clock is its own: a clock given with
	// WithClock, here standing still, is not read.
	inProcess, err := limiter.New(mem, []limiter.Bucket{{Capacity: 1, Period: 300 * time.Millisecond}},
		limiter.WithStoreClock(), limiter.WithClock(fakeclock.New(t0)))
	if err != nil {
		t.Fatalf("WithStoreClock on the memory store: %v", err)
	}
	ctx := context.Background()
	for i, want := range []bool{true, false} {
		if d, err := inProcess.Allow(ctx, "in process"); err != nil || d.Allowed != want {
			t.Fatalf("in process, call %d: %+v, %v; want Allowed %t", i, d, err, want)
		}
	}
	// Wait sleeps on the store's clock too, not on the one given.
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := inProcess.Wait(waitCtx, "in process"); err != nil {
		t.Fatalf("in process, Wait for a token due in 300ms on the store's clock: %v", err)
	}
	time.Sleep(350 * time.Millisecond)
	if d, err := inProcess.Allow(ctx, "in process"); err != nil || !d.Allowed {
		t.Errorf("in process, 350ms later on the store's clock: %+v, %v; want allowed", d, err)
	}
	serverClock := fakeclock.New(t0)
	store := timedStore{mem, serverClock}
	b := []limiter.Bucket{{Capacity: 10, Period: 50 * time.Second}} // a token every 5s
	run := func(name string, opts ...limiter.Option) int {
		var lims []*limiter.Limiter
		for _, skew := range []time.Duration{0, 5 * time.Second} {
			lim, err := limiter.New(store, b, append(opts, limiter.WithName(name), limiter.WithClock(fakeclock.New(t0.Add(skew))))...)
			if err != nil {
				t.Fatal(err)
			}
			lims = append(lims, lim)
		}
		admitted := 0
		for i := range 40 {
			d, err := lims[i%2].Allow(context.Background(), "k")
			if err != nil {
				t.Fatal(err)
			}
			if d.Allowed {
				admitted++
			}
		}
		return admitted
	}
	if got := run("store", limiter.WithStoreClock()); got != 10 {
		t.Errorf("on the store clock, 5s apart: admitted %d, want 10", got)
	}
	// The documented error bound: skew*C/P tokens, here one.
	if got := run("app"); got != 11 {
		t.Errorf("on application clocks 5s apart: admitted %d, want 11 (one token of skew)", got)
	}
}

// laggyStore is a TimedStore with a clock of its own, server, beside the
// limiter's, local. Each call takes send on both clocks before the store
// reads its clock (the request on its way, or waiting for a connection),
// then back on both (the reply on its way).
type laggyStore struct {
	storage.Store
	local, server *fakeclock.Clock
	send, back    time.Duration
}

func (s *laggyStore) reply() time.Time {
	s.local.Advance(s.send)
	s.server.Advance(s.send)
	at := s.server.Now()
	s.local.Advance(s.back)
	s.server.Advance(s.back)
	return at
}

func (s *laggyStore) GetTimed(ctx context.Context, key string) (storage.Record, time.Time, error) {
	rec, err := s.Get(ctx, key)
	return rec, s.reply(), err
}

func (s *laggyStore) CompareAndSwapTimed(ctx context.Context, key string, expected uint64, value []byte, ttl time.Duration) (storage.Record, bool, time.Time, error) {
	rec, ok, err := s.CompareAndSwap(ctx, key, expected, value, ttl)
	return rec, ok, s.reply(), err
}

// laggy returns a limiter on the store's clock of a laggyStore whose
// clocks start at local and server, with one bucket of a token per period.
func laggy(t *testing.T, period time.Duration, local, server time.Time) (*limiter.Limiter, *laggyStore) {
	t.Helper()
	mem := memory.New()
	t.Cleanup(func() { mem.Close() })
	store := &laggyStore{Store: faultstore.New(mem), local: fakeclock.New(local), server: fakeclock.New(server)}
	lim, err := limiter.New(store, []limiter.Bucket{{Capacity: 1, Period: period}}, limiter.WithStoreClock(), limiter.WithClock(store.local))
	if err != nil {
		t.Fatal(err)
	}
	return lim, store
}

// advance moves both of s's clocks on by d, and the store's by skew more.
func (s *laggyStore) advance(d, skew time.Duration) {
	s.local.Advance(d)
	s.server.Advance(d + skew)
}

// mustBeAllowed fails t at once unless lim allows a call on key.
func mustBeAllowed(t *testing.T, lim *limiter.Limiter, key, what string) {
	t.Helper()
	if d, err := lim.Allow(context.Background(), key); err != nil || !d.Allowed {
		t.Fatalf("%s: %+v, %v; want allowed", what, d, err)
	}
}

// slowCalls makes n allowed calls on other keys, each of which waits
// 500ms before the store reads its clock and 500ms for its reply.
func (s *laggyStore) slowCalls(t *testing.T, lim *limiter.Limiter, n int) {
	t.Helper()
	s.send, s.back = 500*time.Millisecond, 500*time.Millisecond
	defer func() { s.send, s.back = 0, 0 }()
	for i := range n {
		mustBeAllowed(t, lim, fmt.Sprint("slow", i), "slow call")
	}
}

// TestStoreClockSlowReplyKeepsTime: on the store's clock, a reply that
// comes back late does not set the limiter's time back by its delay, so
// that a caller that waits the RetryAfter of a denial is allowed (it was
// denied again when the limiter took each reply's time as the store's
// time on arrival).
func TestStoreClockSlowReplyKeepsTime(t *testing.T) {
	lim, store := laggy(t, time.Second, t0, t0.Add(5*time.Second))
	ctx := context.Background()
	mustBeAllowed(t, lim, "idle", "first call")
	denied, err := lim.Allow(ctx, "idle")
	if err != nil || denied.Allowed || denied.RetryAfter != time.Second {
		t.Fatalf("second call: %+v, %v; want denied for 1s", denied, err)
	}
	// Meanwhile a call on another key takes 300ms to come back.
	store.back = 300 * time.Millisecond
	mustBeAllowed(t, lim, "busy", "slow call")
	store.back = 0
	store.advance(denied.RetryAfter-300*time.Millisecond, 0)
	if d, err := lim.Allow(ctx, "idle"); err != nil || !d.Allowed {
		t.Errorf("after waiting RetryAfter: %+v, %v; want allowed", d, err)
	}
}

// TestStoreClockFollowsStoreBack: when the store's clock goes back (a
// failover to a server whose clock is behind), the limiter follows it as
// soon as a reply shows it, rather than deciding ahead of the store.
func TestStoreClockFollowsStoreBack(t *testing.T) {
	lim, store := laggy(t, time.Hour, t0, t0.Add(5*time.Second))
	ctx := context.Background()
	mustBeAllowed(t, lim, "k", "first call")
	store.advance(0, -time.Second)
	mustBeAllowed(t, lim, "probe", "call after the store's clock went back")
	// k was taken at the store's time t0+5s, and it is now t0+4s there:
	// the bucket refills from t0+5s.
	if d, err := lim.Allow(ctx, "k"); err != nil || d.Allowed || d.RetryAfter != time.Hour+time.Second {
		t.Errorf("k on the store's clock set back 1s: %+v, %v; want denied for 1h1s", d, err)
	}
}

// TestStoreClockFallsBehindNotAhead: when replies show the limiter ahead
// of the store, it falls to where the store's clock may have been read
// last, behind it, not to where it may have been read first: under load
// a call waits before the store reads its clock, and that wait would put
// the limiter ahead of the store, admitting early (found by a review).
func TestStoreClockFallsBehindNotAhead(t *testing.T) {
	lim, store := laggy(t, time.Hour, t0, t0)
	ctx := context.Background()
	// k's token is back at t0+1h on the store's clock.
	mustBeAllowed(t, lim, "k", "first call")
	store.advance(time.Hour-10*time.Second, -time.Second) // the store's clock gained 1s less
	store.slowCalls(t, lim, 10)
	store.advance(750*time.Millisecond, 0)
	if d, err := lim.Allow(ctx, "k"); err != nil || d.Allowed {
		t.Errorf("k 250ms before its token on the store's clock (at %v): %+v, %v; want denied", store.server.Now().Sub(t0), d, err)
	}
}

// TestStoreClockOffsetNearWrap: an offset near the end of int64's range
// (a local clock in 1734 against a store in 2027) is compared by its
// wrapping difference, as it is added, and keeps the limiter behind the
// store; signed comparisons flipped it ahead on every other reply.
func TestStoreClockOffsetNearWrap(t *testing.T) {
	server := time.Date(2027, 1, 15, 0, 0, 0, 0, time.UTC)
	for name, local := range map[string]time.Time{
		"ordinary":             server.Add(-time.Hour),
		"offset near MaxInt64": time.Unix(0, server.UnixNano()-math.MaxInt64+int64(100*time.Millisecond)),
	} {
		t.Run(name, func(t *testing.T) {
			lim, store := laggy(t, time.Hour, local, server)
			ctx := context.Background()
			mustBeAllowed(t, lim, "k", "first call")
			store.advance(time.Hour-5*time.Second, 0)
			store.slowCalls(t, lim, 3)
			store.advance(1750*time.Millisecond, 0)
			if d, err := lim.Allow(ctx, "k"); err != nil || d.Allowed {
				t.Errorf("k 250ms before its token on the store's clock: %+v, %v; want denied", d, err)
			}
		})
	}
}

// TestStoreClockFollowsLocalStep: a reply whose round trip, on the
// monotonic clock, is shorter than the wall clock moved during it shows a
// step of the local clock, and the offset follows it to the reply's lower
// bound at once (learn hands learnOffset the monotonic round trip; a
// manual clock cannot step one without the other).
func TestStoreClockFollowsLocalStep(t *testing.T) {
	lim, _ := laggy(t, time.Hour, t0, t0)
	limiter.LearnOffset(lim, 0, 10*time.Millisecond)
	// The local wall clock steps a minute forward during a 10ms call whose
	// reply took 5ms: the store read its clock 60.005s before the
	// reply's arrival on the stepped clock.
	low := -int64(time.Minute + 5*time.Millisecond)
	limiter.LearnOffset(lim, low, 10*time.Millisecond)
	if off, known := limiter.Offset(lim); !known || off != low {
		t.Errorf("offset after the step: %v (known %t), want %v", time.Duration(off), known, time.Duration(low))
	}
	// A slower reply after it does not set the offset back further.
	limiter.LearnOffset(lim, low-int64(time.Second), 2*time.Second)
	if off, _ := limiter.Offset(lim); off != low {
		t.Errorf("offset after a slow reply: %v, want %v", time.Duration(off), time.Duration(low))
	}
}

// TestNoAllocations: decisions without an observer allocate nothing once a
// key is warm; a denial from the cache never does.
func TestNoAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts")
	}
	mem := memory.New()
	defer mem.Close()
	lim, err := limiter.New(mem, []limiter.Bucket{{Capacity: 1, Period: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	lim.Allow(ctx, "k")
	if n := testing.AllocsPerRun(1000, func() { lim.Allow(ctx, "k") }); n != 0 {
		t.Errorf("a cached denial allocates %v times", n)
	}
}

// nowOnly is a Clock with no After method: Wait sleeps on real timers.
type nowOnly struct{}

func (nowOnly) Now() time.Time { return time.Now() }

func TestClockWithoutAfter(t *testing.T) {
	mem := memory.New()
	defer mem.Close()
	lim, err := limiter.New(mem, []limiter.Bucket{{Capacity: 1, Period: 10 * time.Millisecond}}, limiter.WithClock(nowOnly{}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 3 {
		if err := lim.Wait(ctx, "k"); err != nil {
			t.Fatalf("Wait with a clock that has only Now: %v", err)
		}
	}
}

// ttlStore records the times to live a limiter asks for.
type ttlStore struct {
	storage.Store
	ttls []time.Duration
}

func (s *ttlStore) CompareAndSwap(ctx context.Context, key string, expected uint64, value []byte, ttl time.Duration) (storage.Record, bool, error) {
	s.ttls = append(s.ttls, ttl)
	return s.Store.CompareAndSwap(ctx, key, expected, value, ttl)
}

// On the system clock a record lives until its buckets are full plus a
// second; on a clock of the caller's, at least a minute, so that a test
// clock standing still does not see it expire in real time.
func TestStoreTTLOnOwnClock(t *testing.T) {
	buckets := []limiter.Bucket{{Capacity: 1, Period: 10 * time.Millisecond}}
	for _, c := range []struct {
		name     string
		opts     []limiter.Option
		min, max time.Duration
	}{
		{"system clock", nil, time.Second + 10*time.Millisecond, time.Second + 11*time.Millisecond},
		{"own clock", []limiter.Option{limiter.WithClock(fakeclock.New(time.Unix(1_700_000_000, 0)))}, time.Minute, time.Minute},
	} {
		mem := memory.New()
		defer mem.Close()
		s := &ttlStore{Store: mem} // hides the in-process path
		lim, err := limiter.New(s, buckets, c.opts...)
		if err != nil {
			t.Fatal(err)
		}
		if d, err := lim.Allow(context.Background(), "k"); err != nil || !d.Allowed {
			t.Fatalf("%s: %+v, %v", c.name, d, err)
		}
		if len(s.ttls) != 1 || s.ttls[0] < c.min || s.ttls[0] > c.max {
			t.Errorf("%s: asked for %v; want one time to live within [%v, %v]", c.name, s.ttls, c.min, c.max)
		}
	}
}

// The in-process path: a key emptied on a manual clock that stands still
// stays empty after its Period plus a second of real time.
func TestOwnClockStandingStillInProcess(t *testing.T) {
	t.Parallel()
	mem := memory.New(memory.WithSweepInterval(10 * time.Millisecond))
	defer mem.Close()
	lim, err := limiter.New(mem, []limiter.Bucket{{Capacity: 1, Period: 10 * time.Millisecond}},
		limiter.WithClock(fakeclock.New(time.Unix(1_700_000_000, 0))))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mustBeAllowed(t, lim, "k", "first call")
	// A refund's record too: two tokens taken, one given back.
	refunded, err := limiter.New(mem, []limiter.Bucket{{Capacity: 2, Period: 10 * time.Millisecond}},
		limiter.WithClock(fakeclock.New(time.Unix(1_700_000_000, 0))))
	if err != nil {
		t.Fatal(err)
	}
	if d, err := refunded.AllowN(ctx, "k", 2); err != nil || !d.Allowed {
		t.Fatalf("first call of the refunded limiter: %+v, %v", d, err)
	}
	if err := refunded.Refund(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // past 10ms + 1s, and past a sweep
	if d, err := lim.Allow(ctx, "k"); err != nil || d.Allowed {
		t.Errorf("after 1.1s of real time, none on the limiter's clock: %+v, %v; want denied", d, err)
	}
	if d, err := refunded.AllowN(ctx, "k", 2); err != nil || d.Allowed {
		t.Errorf("refunded, after 1.1s of real time, none on the limiter's clock: %+v, %v; want denied (1 token)", d, err)
	}
}

// hangsUntilCtxEnds is a store whose every call waits for its context to
// end and then fails as drivers do: wrapping storage.ErrUnavailable (the
// outcome is unknown) and the context's error.
type hangsUntilCtxEnds struct {
	storage.Store
	entered *atomic.Int64 // calls that reached the store
}

func (s hangsUntilCtxEnds) fail(ctx context.Context) error {
	s.entered.Add(1)
	<-ctx.Done()
	return fmt.Errorf("driver: %w: %w", storage.ErrUnavailable, ctx.Err())
}

func (s hangsUntilCtxEnds) Get(ctx context.Context, _ string) (storage.Record, error) {
	return storage.Record{}, s.fail(ctx)
}

func (s hangsUntilCtxEnds) CompareAndSwap(ctx context.Context, _ string, _ uint64, _ []byte, _ time.Duration) (storage.Record, bool, error) {
	return storage.Record{}, false, s.fail(ctx)
}

func (s hangsUntilCtxEnds) Delete(ctx context.Context, _ string) error { return s.fail(ctx) }

// TestContextEndingDuringACall: a call whose context ends while its store
// call is under way returns an error matching the context's; when the
// store reports the outcome unknown, as this one does, it matches
// storage.ErrUnavailable too, as the package documentation says; so does
// what the observer gets.
func TestContextEndingDuringACall(t *testing.T) {
	mem := memory.New()
	t.Cleanup(func() { mem.Close() })
	rec := &recorder{}
	var entered atomic.Int64
	lim, err := limiter.New(hangsUntilCtxEnds{mem, &entered}, []limiter.Bucket{{Capacity: 5, Period: time.Second}}, limiter.WithObserver(rec))
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]func(ctx context.Context) error{
		"Allow":  func(ctx context.Context) error { _, err := lim.Allow(ctx, "k"); return err },
		"Peek":   func(ctx context.Context) error { _, err := lim.Peek(ctx, "k"); return err },
		"Refund": func(ctx context.Context) error { return lim.Refund(ctx, "k", 1) },
		"Reset":  func(ctx context.Context) error { return lim.Reset(ctx, "k") },
		"Wait":   func(ctx context.Context) error { return lim.Wait(ctx, "k") },
	}
	for name, call := range calls {
		for _, end := range []struct {
			name string
			ctx  func() (context.Context, context.CancelFunc)
			want error
		}{
			{"deadline", func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 20*time.Millisecond)
			}, context.DeadlineExceeded},
			{"cancel", func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				time.AfterFunc(20*time.Millisecond, cancel)
				return ctx, cancel
			}, context.Canceled},
		} {
			before := entered.Load()
			ctx, cancel := end.ctx()
			err := call(ctx)
			cancel()
			// On a loaded machine the context may end before the store
			// call starts: then the context's error comes as it is.
			reached := entered.Load() > before
			if !errors.Is(err, end.want) || reached && !errors.Is(err, storage.ErrUnavailable) {
				t.Errorf("%s, %s during the call (store reached: %t): %v; want an error matching %v, and storage.ErrUnavailable if the store was reached", name, end.name, reached, err, end.want)
			}
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.errors) == 0 {
		t.Fatal("the observer saw no error")
	}
	for _, e := range rec.errors {
		if !errors.Is(e.Err, storage.ErrUnavailable) {
			t.Errorf("observer got %v for %s; want the store's error", e.Err, e.Method)
		}
	}
}

// TestDryRunMarksErrorEvents: a dry-run limiter's error events are marked
// DryRun too, as Event.DryRun promises for every event of such a limiter.
func TestDryRunMarksErrorEvents(t *testing.T) {
	rec := &recorder{}
	lim, fs, _ := faulty(t, []limiter.Bucket{{Capacity: 1, Period: time.Second}}, limiter.WithDryRun(), limiter.WithObserver(rec))
	ctx := context.Background()
	fs.FailAll(storage.ErrUnavailable)
	_, _ = lim.Allow(ctx, "k")
	_, _ = lim.Peek(ctx, "k")
	_ = lim.Reset(ctx, "k")
	_ = lim.Refund(ctx, "k", 1)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.errors) != 4 {
		t.Fatalf("got %d error events, want 4: %+v", len(rec.errors), rec.errors)
	}
	for _, e := range rec.errors {
		if !e.DryRun {
			t.Errorf("%s error event of a dry-run limiter: DryRun false", e.Method)
		}
	}
}

// TestStoreErrorsNameKey: the bare error of a store that does not wrap its
// failures comes back matching storage.ErrUnavailable, with the key named,
// from every method that calls the store.
func TestStoreErrorsNameKey(t *testing.T) {
	lim, fs, _ := faulty(t, []limiter.Bucket{{Capacity: 1, Period: time.Second}})
	ctx := context.Background()
	boom := errors.New("boom")
	fs.FailAll(boom)
	calls := map[string]func() error{
		"Allow":  func() error { _, err := lim.Allow(ctx, "user:42"); return err },
		"Peek":   func() error { _, err := lim.Peek(ctx, "user:42"); return err },
		"Reset":  func() error { return lim.Reset(ctx, "user:42") },
		"Refund": func() error { return lim.Refund(ctx, "user:42", 1) },
	}
	for name, call := range calls {
		err := call()
		if !errors.Is(err, storage.ErrUnavailable) || !errors.Is(err, boom) || !strings.Contains(fmt.Sprint(err), "user:42") {
			t.Errorf("%s with a store failing with a bare error = %v, want it matching storage.ErrUnavailable and boom, naming user:42", name, err)
		}
	}
}

// TestClosedStoreErrorNamesKeyOnce: a closed store's error, which the
// drivers give with the key named, comes back matching storage.ErrClosed
// and storage.ErrUnavailable with the key named once, on the in-process
// path as on the others.
func TestClosedStoreErrorNamesKeyOnce(t *testing.T) {
	mem := memory.New()
	lim, err := limiter.New(mem, []limiter.Bucket{{Capacity: 1, Period: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	mem.Close()
	ctx := context.Background()
	calls := map[string]func() error{
		"Allow": func() error { _, err := lim.Allow(ctx, "user:42"); return err },
		"Peek":  func() error { _, err := lim.Peek(ctx, "user:42"); return err },
		"Reset": func() error { return lim.Reset(ctx, "user:42") },
	}
	for name, call := range calls {
		err := call()
		if !errors.Is(err, storage.ErrClosed) || !errors.Is(err, storage.ErrUnavailable) || strings.Count(fmt.Sprint(err), "user:42") != 1 {
			t.Errorf("%s on a closed store = %v, want storage.ErrClosed and storage.ErrUnavailable, naming user:42 once", name, err)
		}
	}
}
