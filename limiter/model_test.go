package limiter_test

// A reference model of the bucket semantics (the package doc's Model, and
// the project's design document), written in
// math/big rationals so that it is exact by construction and shares no
// code with the limiter, and a differential test of the limiter against
// it: on the in-process store, and on a store that is not in-process (the
// cache and the compare-and-swap loop), with and without dry run.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/sluice-go/sluice/internal/fakeclock"
	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/memory"
)

// modelKey is one key's stored state in the model.
type modelKey struct {
	at     *big.Int   // the latest time the stored state has seen, in ns
	levels []*big.Rat // tokens per bucket, exactly
}

// model is the limiter's semantics for one set of buckets.
type model struct {
	buckets []limiter.Bucket // by Period, then Capacity: the limiter's canonical order
	keys    map[string]*modelKey
}

func newModel(bs []limiter.Bucket) *model {
	c := slices.Clone(bs)
	slices.SortFunc(c, func(x, y limiter.Bucket) int {
		if x.Period != y.Period {
			return cmpInt(int64(x.Period), int64(y.Period))
		}
		return cmpInt(x.Capacity, y.Capacity)
	})
	return &model{buckets: c, keys: map[string]*modelKey{}}
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func rat(x int64) *big.Rat { return new(big.Rat).SetInt64(x) }

// floorRat and ceilRat round r >= 0 to an integer.
func floorRat(r *big.Rat) *big.Int { return new(big.Int).Quo(r.Num(), r.Denom()) }

func ceilRat(r *big.Rat) *big.Int {
	q, m := new(big.Int).QuoRem(r.Num(), r.Denom(), new(big.Int))
	if m.Sign() != 0 {
		q.Add(q, big.NewInt(1))
	}
	return q
}

func duration(x *big.Int) time.Duration {
	if !x.IsInt64() {
		return math.MaxInt64
	}
	return time.Duration(x.Int64())
}

// view returns key's state refilled to now, without changing what is
// stored: a key never written, or reset, is full at now. Time before the
// stored state's refills nothing.
func (m *model) view(key string, now int64) *modelKey {
	n := big.NewInt(now)
	v := &modelKey{at: n}
	k := m.keys[key]
	if k == nil {
		for _, b := range m.buckets {
			v.levels = append(v.levels, rat(b.Capacity))
		}
		return v
	}
	v.at = new(big.Int).Set(k.at)
	for _, l := range k.levels {
		v.levels = append(v.levels, new(big.Rat).Set(l))
	}
	if n.Cmp(v.at) > 0 {
		elapsed := new(big.Int).Sub(n, v.at)
		for i, b := range m.buckets {
			refill := new(big.Rat).SetFrac(new(big.Int).Mul(elapsed, big.NewInt(b.Capacity)), big.NewInt(int64(b.Period)))
			v.levels[i].Add(v.levels[i], refill)
			if v.levels[i].Cmp(rat(b.Capacity)) > 0 {
				v.levels[i] = rat(b.Capacity)
			}
		}
		v.at = n
	}
	return v
}

// wait is the exact time from now until bucket i of v holds n tokens: the
// refill still missing, after the time the clock is behind v.
func (m *model) wait(v *modelKey, now int64, i int, n int64) *big.Rat {
	if v.levels[i].Cmp(rat(n)) >= 0 {
		return new(big.Rat)
	}
	behind := new(big.Int).Sub(v.at, big.NewInt(now))
	if behind.Sign() < 0 {
		behind.SetInt64(0)
	}
	w := new(big.Rat).Sub(rat(n), v.levels[i])
	w.Mul(w, new(big.Rat).SetFrac64(int64(m.buckets[i].Period), m.buckets[i].Capacity))
	return w.Add(w, new(big.Rat).SetInt(behind))
}

// describe is the Decision for a call of the given cost on v at now: the
// binding bucket is the one with the fewest whole tokens, then the slowest
// to refill, then the first in canonical order.
func (m *model) describe(v *modelKey, now, cost int64, allowed bool) limiter.Decision {
	d := limiter.Decision{Allowed: allowed}
	if !allowed {
		longest := new(big.Rat)
		for i := range m.buckets {
			if w := m.wait(v, now, i, cost); w.Cmp(longest) > 0 {
				longest = w
			}
		}
		d.RetryAfter = duration(ceilRat(longest))
	}
	bind := 0
	for i := 1; i < len(m.buckets); i++ {
		switch floorRat(v.levels[i]).Cmp(floorRat(v.levels[bind])) {
		case -1:
			bind = i
		case 0:
			rate := new(big.Rat).SetFrac64(m.buckets[i].Capacity, int64(m.buckets[i].Period))
			bindRate := new(big.Rat).SetFrac64(m.buckets[bind].Capacity, int64(m.buckets[bind].Period))
			if rate.Cmp(bindRate) < 0 {
				bind = i
			}
		}
	}
	d.Limit = m.buckets[bind].Capacity
	d.Remaining = floorRat(v.levels[bind]).Int64()
	d.ResetAfter = duration(ceilRat(m.wait(v, now, bind, m.buckets[bind].Capacity)))
	return d
}

func (m *model) minCapacity() int64 {
	c := m.buckets[0].Capacity
	for _, b := range m.buckets {
		c = min(c, b.Capacity)
	}
	return c
}

// allowN takes cost from every bucket if each holds it; only a take
// writes the state (with the time it was decided at).
func (m *model) allowN(key string, now, cost int64, dryRun bool) (limiter.Decision, error) {
	if cost > m.minCapacity() {
		return limiter.Decision{}, limiter.ErrCostExceedsCapacity
	}
	v := m.view(key, now)
	allowed := true
	for i := range m.buckets {
		allowed = allowed && v.levels[i].Cmp(rat(cost)) >= 0
	}
	if allowed {
		for i := range m.buckets {
			v.levels[i].Sub(v.levels[i], rat(cost))
		}
		m.keys[key] = v
	}
	d := m.describe(v, now, cost, allowed)
	if dryRun && !allowed {
		d.Allowed, d.DryRun = true, true
	}
	return d, nil
}

func (m *model) peek(key string, now int64) limiter.Decision {
	v := m.view(key, now)
	allowed := true
	for i := range m.buckets {
		allowed = allowed && v.levels[i].Cmp(rat(1)) >= 0
	}
	return m.describe(v, now, 1, allowed)
}

func (m *model) refund(key string, now, n int64) {
	v := m.view(key, now)
	for i, b := range m.buckets {
		v.levels[i].Add(v.levels[i], rat(n))
		if v.levels[i].Cmp(rat(b.Capacity)) > 0 {
			v.levels[i] = rat(b.Capacity)
		}
	}
	m.keys[key] = v
}

func (m *model) reset(key string) { delete(m.keys, key) }

// remoteOnly hides the memory store's in-process interface, so that a
// limiter over it takes the path of a networked store: the cache and the
// compare-and-swap loop.
type remoteOnly struct{ storage.Store }

// manualClock is a clock that moves only when a test sets it, backwards
// included.
type manualClock struct{ ns int64 }

func (c *manualClock) now() time.Time { return time.Unix(0, c.ns) }

var (
	modelCapacities = []int64{1, 2, 3, 5, 7, 10, 97, 1000, 1 << 20, limiter.MaxCapacity - 1, limiter.MaxCapacity}
	modelPeriods    = []time.Duration{1, 2, 3, 7, 13, 997, 1000003, time.Millisecond, time.Second,
		time.Minute, 7919 * time.Second, time.Hour, 24 * time.Hour, limiter.MaxPeriod - 1, limiter.MaxPeriod}
)

// randBuckets returns 1 to 4 distinct buckets (sometimes MaxBuckets),
// mostly of remarkable sizes, sometimes of any.
func randBuckets(r *rand.Rand) []limiter.Bucket {
	n := 1 + r.IntN(4)
	if r.IntN(8) == 0 {
		n = limiter.MaxBuckets
	}
	var bs []limiter.Bucket
	for len(bs) < n {
		b := limiter.Bucket{
			Capacity: modelCapacities[r.IntN(len(modelCapacities))],
			Period:   modelPeriods[r.IntN(len(modelPeriods))],
		}
		if r.IntN(4) == 0 {
			b.Capacity = 1 + r.Int64N(limiter.MaxCapacity)
		}
		if r.IntN(4) == 0 {
			b.Period = time.Duration(1 + r.Int64N(int64(limiter.MaxPeriod)))
		}
		if !slices.Contains(bs, b) {
			bs = append(bs, b)
		}
	}
	return bs
}

// randTime steps the clock from cur: not at all, by a nanosecond, by about
// a token or a Period, by years, or backwards, staying between 1940 and
// about 2170.
func randTime(r *rand.Rand, bs []limiter.Bucket, cur int64) int64 {
	p := int64(bs[r.IntN(len(bs))].Period)
	var d int64
	switch r.IntN(12) {
	case 0:
	case 1:
		d = 1
	case 2:
		d = r.Int64N(100)
	case 3:
		d = 1 + r.Int64N(p)
	case 4:
		d = p / bs[r.IntN(len(bs))].Capacity
	case 5:
		d = p
	case 6:
		d = p - 1
	case 7:
		d = r.Int64N(int64(2 * limiter.MaxPeriod))
	case 8:
		d = -1
	case 9:
		d = -r.Int64N(p + 1)
	case 10:
		d = -r.Int64N(int64(limiter.MaxPeriod))
	default:
		d = r.Int64N(1000) * r.Int64N(1000)
	}
	const lo, hi = -int64(30 * 365 * 24 * time.Hour), int64(200 * 365 * 24 * time.Hour)
	for _, t := range []int64{cur + d, cur - d} {
		if t >= lo && t <= hi {
			return t
		}
	}
	return cur
}

// randCost is mostly small, sometimes the smallest capacity, and now and
// then one above it, which is an error.
func randCost(r *rand.Rand, minCap int64) int64 {
	switch r.IntN(10) {
	case 0, 1, 2:
		return 1
	case 3:
		return minCap
	case 4:
		return minCap + 1
	case 5:
		return max(1, minCap-1)
	}
	return 1 + r.Int64N(min(minCap, 5))
}

// modelSubject is one limiter under test, with its own store and model.
type modelSubject struct {
	name   string
	lim    *limiter.Limiter
	dryRun bool
	model  *model
}

// manualLimiter returns a limiter with the buckets bs and opts on clock,
// over a fresh memory store, hidden behind remoteOnly when remote.
func manualLimiter(t *testing.T, remote bool, clock *manualClock, bs []limiter.Bucket, opts ...limiter.Option) *limiter.Limiter {
	t.Helper()
	mem := memory.New()
	t.Cleanup(func() { mem.Close() })
	var store storage.Store = mem
	if remote {
		store = remoteOnly{mem}
	}
	lim, err := limiter.New(store, bs, append([]limiter.Option{limiter.WithClock(clock.now)}, opts...)...)
	if err != nil {
		t.Fatalf("New(%v): %v", bs, err)
	}
	return lim
}

// modelSubjects returns limiters with the buckets bs, all on clock: over
// an in-process store, over one that is not (with its cache and without),
// each also in dry run.
func modelSubjects(t *testing.T, bs []limiter.Bucket, clock *manualClock) []modelSubject {
	t.Helper()
	var subjects []modelSubject
	for _, path := range []string{"in-process", "remote", "remote-nocache"} {
		for _, dryRun := range []bool{false, true} {
			var opts []limiter.Option
			if path == "remote-nocache" {
				opts = append(opts, limiter.WithCacheSize(0))
			}
			name := path
			if dryRun {
				opts = append(opts, limiter.WithDryRun())
				name += "+dryrun"
			}
			lim := manualLimiter(t, path != "in-process", clock, bs, opts...)
			subjects = append(subjects, modelSubject{name, lim, dryRun, newModel(bs)})
		}
	}
	return subjects
}

// envInt reads a count from the environment, for longer runs by hand.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestModel drives limiters with random buckets through random AllowN,
// Peek, Refund and Reset calls on a clock that jumps forwards and
// backwards, and checks every Decision and error against the model.
// MODEL_SEEDS=2000 runs longer.
func TestModel(t *testing.T) {
	seeds := envInt("MODEL_SEEDS", 200)
	if testing.Short() {
		seeds = 20
	}
	const steps = 200
	ctx := context.Background()
	ops := 0
	for seed := range uint64(seeds) {
		r := rand.New(rand.NewPCG(seed, 0x5eed))
		bs := randBuckets(r)
		clock := &manualClock{ns: int64(30*365*24*time.Hour) + r.Int64N(int64(time.Hour))}
		subjects := modelSubjects(t, bs, clock)
		var history []string
		for step := range steps {
			clock.ns = randTime(r, bs, clock.ns)
			key := []string{"a", "b"}[r.IntN(2)]
			minCap := subjects[0].model.minCapacity()
			kind, cost := r.IntN(20), int64(0)
			switch {
			case kind < 13:
				cost = randCost(r, minCap)
				history = append(history, fmt.Sprintf("t=%d AllowN(%q, %d)", clock.ns, key, cost))
			case kind < 16:
				history = append(history, fmt.Sprintf("t=%d Peek(%q)", clock.ns, key))
			case kind < 19:
				cost = 1 + r.Int64N(min(minCap, 3))
				if r.IntN(4) == 0 {
					cost = minCap
				}
				history = append(history, fmt.Sprintf("t=%d Refund(%q, %d)", clock.ns, key, cost))
			default:
				history = append(history, fmt.Sprintf("t=%d Reset(%q)", clock.ns, key))
			}
			for _, s := range subjects {
				var got, want limiter.Decision
				var err, wantErr error
				switch {
				case kind < 13:
					got, err = s.lim.AllowN(ctx, key, cost)
					want, wantErr = s.model.allowN(key, clock.ns, cost, s.dryRun)
				case kind < 16:
					got, err = s.lim.Peek(ctx, key)
					want = s.model.peek(key, clock.ns)
				case kind < 19:
					err = s.lim.Refund(ctx, key, cost)
					s.model.refund(key, clock.ns, cost)
				default:
					err = s.lim.Reset(ctx, key)
					s.model.reset(key)
				}
				ops++
				if (err == nil) != (wantErr == nil) || !errors.Is(err, wantErr) || got != want {
					t.Fatalf("seed %d, step %d, %s, buckets %v: %s\n got  %+v, %v\n want %+v, %v\nlast calls: %q",
						seed, step, s.name, bs, history[len(history)-1], got, err, want, wantErr, history[max(0, len(history)-8):])
				}
			}
		}
	}
	t.Logf("%d seeds x %d steps: %d calls compared", seeds, steps, ops)
}

// TestModelAsFastAsItCan has a client call Allow again exactly when
// RetryAfter says: it is never denied right after waiting, and it has been
// admitted exactly C + floor(t*C/P) times by every denial at time t.
func TestModelAsFastAsItCan(t *testing.T) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(42, 1))
	for trial := range 60 {
		b := limiter.Bucket{Capacity: 1 + r.Int64N(50), Period: time.Duration(1 + r.Int64N(1e6))}
		if trial%3 == 0 {
			b = limiter.Bucket{Capacity: limiter.MaxCapacity - r.Int64N(3), Period: limiter.MaxPeriod - time.Duration(r.Int64N(3))}
		}
		for _, remote := range []bool{false, true} {
			clock := &manualClock{ns: 1_000_000_000}
			start := clock.ns
			lim := manualLimiter(t, remote, clock, []limiter.Bucket{b})
			var admitted int64
			waited := false
			for range 300 {
				d, err := lim.Allow(ctx, "k")
				if err != nil {
					t.Fatal(err)
				}
				want := new(big.Int).Mul(big.NewInt(clock.ns-start), big.NewInt(b.Capacity))
				want.Quo(want, big.NewInt(int64(b.Period))).Add(want, big.NewInt(b.Capacity))
				switch {
				case d.Allowed:
					admitted++
					waited = false
					if admitted > want.Int64() {
						t.Fatalf("%v, remote %v: %d admitted by t=%d, at most %v exist", b, remote, admitted, clock.ns-start, want)
					}
				case waited:
					t.Fatalf("%v, remote %v: denied at t=%d right after waiting RetryAfter", b, remote, clock.ns-start)
				case admitted != want.Int64():
					t.Fatalf("%v, remote %v: denied at t=%d with %d admitted, want %v", b, remote, clock.ns-start, admitted, want)
				default:
					waited = true
				}
				clock.ns += int64(d.RetryAfter)
			}
		}
	}
}

// TestModelExtremeClocks moves the clock between the ends of int64
// nanoseconds: no call panics or returns an error, and no Decision has a
// negative duration or a Remaining outside 0..Capacity.
func TestModelExtremeClocks(t *testing.T) {
	ctx := context.Background()
	times := []int64{math.MinInt64, math.MinInt64 + 1, -1, 0, 1, math.MaxInt64 - 1, math.MaxInt64}
	buckets := []limiter.Bucket{{Capacity: 1, Period: 1}, {Capacity: limiter.MaxCapacity, Period: limiter.MaxPeriod}, {Capacity: 3, Period: 7}}
	for _, remote := range []bool{false, true} {
		for _, b := range buckets {
			clock := &manualClock{}
			lim := manualLimiter(t, remote, clock, []limiter.Bucket{b})
			check := func(what string, d limiter.Decision, err error) {
				t.Helper()
				if err != nil || d.RetryAfter < 0 || d.ResetAfter < 0 || d.Remaining < 0 || d.Remaining > b.Capacity {
					t.Fatalf("%v, remote %v, t=%d, %s: %+v, %v", b, remote, clock.ns, what, d, err)
				}
			}
			for _, a := range times {
				for _, z := range times {
					for _, at := range []int64{a, z, a} {
						clock.ns = at
						for _, cost := range []int64{1, b.Capacity} {
							d, err := lim.AllowN(ctx, "k", cost)
							check(fmt.Sprintf("AllowN(%d)", cost), d, err)
						}
						check("Refund", limiter.Decision{}, lim.Refund(ctx, "k", 1))
						d, err := lim.Peek(ctx, "k")
						check("Peek", d, err)
					}
					check("Reset", limiter.Decision{}, lim.Reset(ctx, "k"))
				}
			}
		}
	}
}

// TestDenialAfterClockStepsBack: a denial on a networked store does not
// cache the record refilled to the denial's time. The clock then stepping
// back, the next call is decided on what the store holds, as on the
// in-process store: 2 tokens at t=2s, not the 5 refilled by t=5s.
func TestDenialAfterClockStepsBack(t *testing.T) {
	ctx := context.Background()
	for _, remote := range []bool{false, true} {
		clock := &manualClock{ns: t0.UnixNano()}
		lim := manualLimiter(t, remote, clock, []limiter.Bucket{{Capacity: 10, Period: 10 * time.Second}})
		if d, err := lim.AllowN(ctx, "k", 10); err != nil || !d.Allowed {
			t.Fatalf("remote %v: first call: %+v, %v", remote, d, err)
		}
		clock.ns = t0.Add(5 * time.Second).UnixNano()
		if d, err := lim.AllowN(ctx, "k", 10); err != nil || d.Allowed || d.Remaining != 5 {
			t.Fatalf("remote %v: at 5s: %+v, %v; want a denial with 5 left", remote, d, err)
		}
		clock.ns = t0.Add(2 * time.Second).UnixNano()
		d, err := lim.AllowN(ctx, "k", 3)
		if err != nil || d.Allowed || d.Remaining != 2 || d.RetryAfter != 1*time.Second {
			t.Errorf("remote %v: cost 3 at 2s, after the clock stepped back from 5s: %+v, %v; want denied, 2 left, retry after 1s", remote, d, err)
		}
	}
}

// TestFullBucketResetsNowWhateverTheClock: a full binding bucket reports
// ResetAfter 0, also when the clock is behind the state's time.
func TestFullBucketResetsNowWhateverTheClock(t *testing.T) {
	ctx := context.Background()
	for _, remote := range []bool{false, true} {
		clock := &manualClock{ns: t0.UnixNano()}
		lim := manualLimiter(t, remote, clock, []limiter.Bucket{{Capacity: 2, Period: time.Second}})
		if _, err := lim.Allow(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		if err := lim.Refund(ctx, "k", 1); err != nil { // full again, stored at t0
			t.Fatal(err)
		}
		clock.ns = t0.Add(-time.Hour).UnixNano()
		d, err := lim.Peek(ctx, "k")
		if err != nil || !d.Allowed || d.Remaining != 2 || d.ResetAfter != 0 {
			t.Errorf("remote %v: Peek of a full bucket an hour behind its state: %+v, %v; want 2 left and ResetAfter 0", remote, d, err)
		}
	}
}

// TestClockBeyondUnixNanoYears: a clock outside the years Unix nanoseconds
// cover (1678 to 2262) reads as their first or last nanosecond. Set far
// back, it refills nothing; UnixNano alone wraps around there, and 1600
// read as a time far ahead, which refilled an empty key.
func TestClockBeyondUnixNanoYears(t *testing.T) {
	ctx := context.Background()
	start := time.Date(2027, 1, 15, 0, 0, 0, 0, time.UTC)
	for _, remote := range []bool{false, true} {
		at := start
		mem := memory.New()
		t.Cleanup(func() { mem.Close() })
		var store storage.Store = mem
		if remote {
			store = remoteOnly{mem}
		}
		lim, err := limiter.New(store, []limiter.Bucket{{Capacity: 2, Period: time.Hour}},
			limiter.WithClock(func() time.Time { return at }))
		if err != nil {
			t.Fatal(err)
		}
		allow := func(when time.Time, cost int64, want bool) {
			t.Helper()
			at = when
			d, err := lim.AllowN(ctx, "k", cost)
			if err != nil || d.Allowed != want {
				t.Fatalf("remote %v: AllowN(%d) at %v = %+v, %v; want allowed %v", remote, cost, when, d, err, want)
			}
		}
		allow(start, 2, true)
		allow(time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC), 1, false)
		allow(time.Time{}, 1, false)
		allow(time.Date(1677, 9, 21, 0, 0, 0, 0, time.UTC), 1, false)
		allow(start.Add(time.Minute), 1, false)
		allow(time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), 2, true) // the future: full again
		allow(time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), 1, false)
		allow(start.Add(2*time.Hour), 1, false) // back: refills nothing
	}
}

// TestStoreClockWithLocalClockBeyondUnixNanoYears: with WithStoreClock, a
// local clock outside the years of Unix nanoseconds does not matter: the
// limiter decides on the store's time, here and on the local clock an hour
// later at every call, so a bucket of one token a second is full at every
// call. (Saturated, the local clock would stand still, and so would the
// limiter's estimate of the store's time between its replies.)
func TestStoreClockWithLocalClockBeyondUnixNanoYears(t *testing.T) {
	ctx := context.Background()
	for _, start := range []time.Time{
		time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC),
		{},
		time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		server := fakeclock.New(time.Date(2027, 1, 15, 0, 0, 0, 0, time.UTC))
		local := fakeclock.New(start)
		mem := memory.New()
		t.Cleanup(func() { mem.Close() })
		lim, err := limiter.New(timedStore{remoteOnly{mem}, server}, []limiter.Bucket{{Capacity: 1, Period: time.Second}},
			limiter.WithStoreClock(), limiter.WithClock(local.Now))
		if err != nil {
			t.Fatal(err)
		}
		for i := range 4 {
			if d, err := lim.Allow(ctx, "k"); err != nil || !d.Allowed {
				t.Fatalf("local clock from %v, call %d: %+v, %v; want allowed on the store's clock", start, i, d, err)
			}
			server.Advance(time.Hour)
			local.Advance(time.Hour)
		}
	}
}
