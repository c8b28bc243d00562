package limiter

import (
	"math/big"
	"math/rand/v2"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// step is one call in a table: at time at (offset from t0), a call of cost
// (0 = Peek) must give want.
type step struct {
	at   time.Duration
	cost int64
	want Decision
}

// runSteps plays steps against the pure algorithm, as the limiter does.
func runSteps(t *testing.T, rules []Bucket, steps []step) {
	t.Helper()
	const t0 = int64(1_700_000_000_000_000_000)
	st := fullState(rules, t0)
	for i, s := range steps {
		cost, take := s.cost, true
		if cost == 0 {
			cost, take = 1, false
		}
		next, d := advanced(rules, st, t0+int64(s.at), cost, take)
		if d.Allowed && take {
			st = next
		}
		if d != s.want {
			t.Errorf("step %d: at %v cost %d = %+v, want %+v", i, s.at, s.cost, d, s.want)
		}
	}
}

func TestDecideSingleBucket(t *testing.T) {
	rules := []Bucket{{Capacity: 5, Period: 10 * time.Second}}
	allow := func(rem int64, reset time.Duration) Decision {
		return Decision{Allowed: true, Limit: 5, Remaining: rem, ResetAfter: reset}
	}
	deny := func(rem int64, retry, reset time.Duration) Decision {
		return Decision{Limit: 5, Remaining: rem, RetryAfter: retry, ResetAfter: reset}
	}
	runSteps(t, rules, []step{
		{0, 0, Decision{Allowed: true, Limit: 5, Remaining: 5}}, // Peek: full
		{0, 1, allow(4, 2*time.Second)},
		{0, 1, allow(3, 4*time.Second)},
		{0, 3, allow(0, 10*time.Second)},
		{0, 1, deny(0, 2*time.Second, 10*time.Second)},
		{0, 0, deny(0, 2*time.Second, 10*time.Second)}, // Peek agrees
		{time.Second, 1, deny(0, time.Second, 9*time.Second)},
		{time.Second, 2, deny(0, 3*time.Second, 9*time.Second)},
		{2*time.Second - 1, 1, deny(0, 1, 8*time.Second+1)},
		{2 * time.Second, 1, allow(0, 10*time.Second)},
		{7 * time.Second, 0, Decision{Allowed: true, Limit: 5, Remaining: 2, ResetAfter: 5 * time.Second}},
		{time.Hour, 5, allow(0, 10*time.Second)},
	})
}

func TestDecideRoundsUp(t *testing.T) {
	// 3 tokens per 10ns: a token every 3.33ns.
	rules := []Bucket{{Capacity: 3, Period: 10}}
	deny := func(retry, reset time.Duration) Decision {
		return Decision{Limit: 3, RetryAfter: retry, ResetAfter: reset}
	}
	runSteps(t, rules, []step{
		{0, 3, Decision{Allowed: true, Limit: 3, ResetAfter: 10}},
		{0, 1, deny(4, 10)}, // 10/3 rounded up
		{3, 1, deny(1, 7)},
		{4, 1, Decision{Allowed: true, Limit: 3, ResetAfter: 10 - 4 + 4}}, // 0 left, 1/3 token carried
		{6, 1, deny(1, 8)},
		{7, 1, Decision{Allowed: true, Limit: 3, ResetAfter: 10}},
	})
}

func TestDecideMultiBucket(t *testing.T) {
	// 2 per second and 3 per 10 seconds: all or nothing.
	rules := []Bucket{{Capacity: 2, Period: time.Second}, {Capacity: 3, Period: 10 * time.Second}}
	runSteps(t, rules, []step{
		{0, 1, Decision{Allowed: true, Limit: 2, Remaining: 1, ResetAfter: 500 * time.Millisecond}},
		{0, 1, Decision{Allowed: true, Limit: 2, Remaining: 0, ResetAfter: time.Second}},
		{0, 1, Decision{Limit: 2, Remaining: 0, RetryAfter: 500 * time.Millisecond, ResetAfter: time.Second}},
		// At 1s the first bucket is full again and the second holds 1.3:
		// the second binds, with 0.3 of a token carried.
		{time.Second, 1, Decision{Allowed: true, Limit: 3, Remaining: 0, ResetAfter: 9 * time.Second}},
		{time.Second, 1, Decision{Limit: 3, Remaining: 0, RetryAfter: 2*time.Second + 333333334, ResetAfter: 9 * time.Second}},
	})
}

func TestDecideBindingTie(t *testing.T) {
	// Both buckets hold 9 after one call; the slower (10 per 10s) binds.
	rules := []Bucket{{Capacity: 10, Period: time.Second}, {Capacity: 10, Period: 10 * time.Second}}
	runSteps(t, rules, []step{
		{0, 1, Decision{Allowed: true, Limit: 10, Remaining: 9, ResetAfter: time.Second}},
	})
}

// A tie between buckets whose Capacity*Period products pass 2^64: the
// slower one still binds (10M a day is 116 per second, 1M an hour 278).
func TestDecideBindingTieLargeProducts(t *testing.T) {
	rules := []Bucket{{Capacity: 1_000_000, Period: time.Hour}, {Capacity: 10_000_000, Period: 24 * time.Hour}}
	st := state{at: 0}
	st.levels[0] = level{whole: 1_000_000}
	st.levels[1] = level{whole: 1_000_000}
	d := decide(rules, &st, 0, 1, false)
	if d.Limit != 10_000_000 || d.Remaining != 1_000_000 {
		t.Fatalf("tied at 1M tokens: Limit %d Remaining %d, want the slower bucket (Limit 10000000, Remaining 1000000)", d.Limit, d.Remaining)
	}
}

func TestDecideClockBackwards(t *testing.T) {
	rules := []Bucket{{Capacity: 2, Period: 2 * time.Second}}
	runSteps(t, rules, []step{
		{10 * time.Second, 2, Decision{Allowed: true, Limit: 2, ResetAfter: 2 * time.Second}},
		// 5s earlier: nothing refills, and the waits count from the
		// latest time seen.
		{5 * time.Second, 1, Decision{Limit: 2, RetryAfter: 6 * time.Second, ResetAfter: 7 * time.Second}},
		{11 * time.Second, 1, Decision{Allowed: true, Limit: 2, ResetAfter: 2 * time.Second}},
	})
	// Extreme times never panic.
	st := fullState(rules, -1<<63)
	if _, d := advanced(rules, st, 1<<63-1, 1, true); !d.Allowed {
		t.Errorf("from MinInt64 to MaxInt64: %+v, want allowed", d)
	}
	st = fullState(rules, 1<<63-1)
	st.levels[0] = level{}
	if _, d := advanced(rules, st, -1<<63, 1, true); d.Allowed || d.RetryAfter != 1<<63-1 {
		t.Errorf("from MaxInt64 back to MinInt64: %+v, want denied with a saturated wait", d)
	}
}

// admittedBy is C + floor(t*C/P), computed with big integers.
func admittedBy(b Bucket, t int64) int64 {
	n := new(big.Int).Mul(big.NewInt(t), big.NewInt(b.Capacity))
	n.Quo(n, big.NewInt(int64(b.Period)))
	return n.Int64() + b.Capacity
}

// TestExactAdmission checks the headline promise: a client that asks as
// fast as it can from t=0 is admitted exactly C + floor(t*C/P) times by t,
// including at the edges of the documented ranges.
func TestExactAdmission(t *testing.T) {
	buckets := []Bucket{
		{1, 1}, {3, 10}, {7, 3}, {5, 10 * time.Second}, {1000, time.Hour},
		{MaxCapacity, MaxPeriod}, {MaxCapacity, 1}, {1, MaxPeriod}, {MaxCapacity - 1, MaxPeriod - 7},
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, b := range buckets {
		rules := []Bucket{b}
		st := fullState(rules, 0)
		var admitted, now int64
		for i := range 200 {
			// Steps short enough that the bucket never sits full, as
			// for a client that never stops asking.
			if i > 0 {
				limit := min(int64(b.Period)/2, 1<<55) // 200 steps stay in int64
				if b.Capacity == 1 {
					// One token is a full bucket: step at most to the
					// instant it arrives.
					limit = min(limit, int64(b.Period)-st.levels[0].frac-(now-st.at)-1)
				}
				now += 1 + r.Int64N(limit+1)
			}
			for {
				// Take as much as possible in one or two calls, as a
				// fast client with a large cost would.
				cost := max(int64(1), st.levels[0].whole)
				next, d := advanced(rules, st, now, cost, true)
				if !d.Allowed {
					next, d = advanced(rules, st, now, 1, true)
					if !d.Allowed {
						break
					}
					cost = 1
				}
				st, admitted = next, admitted+cost
			}
			if want := admittedBy(b, now); admitted != want {
				t.Fatalf("%v: at %d admitted %d, want %d", b, now, admitted, want)
			}
		}
	}
}

// TestAgainstXTimeRate compares allow/deny with golang.org/x/time/rate on
// random sequences. Rates and steps are dyadic fractions of a second so
// that rate's float64 arithmetic is exact too.
func TestAgainstXTimeRate(t *testing.T) {
	const tick = 1953125 // 1/512 s in nanoseconds
	periods := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 8 * time.Second}
	r := rand.New(rand.NewPCG(3, 4))
	for trial := range 300 {
		b := Bucket{Capacity: 1 + r.Int64N(50), Period: periods[r.IntN(len(periods))]}
		rules := []Bucket{b}
		ref := rate.NewLimiter(rate.Limit(float64(b.Capacity)/b.Period.Seconds()), int(b.Capacity))
		t0 := time.Unix(1_700_000_000, 0)
		st := fullState(rules, t0.UnixNano())
		now := t0
		for i := range 400 {
			now = now.Add(time.Duration(r.Int64N(200)) * tick)
			cost := 1 + r.Int64N(b.Capacity)
			if r.IntN(3) > 0 {
				cost = 1
			}
			next, d := advanced(rules, st, now.UnixNano(), cost, true)
			if d.Allowed {
				st = next
			}
			if want := ref.AllowN(now, int(cost)); d.Allowed != want {
				t.Fatalf("trial %d step %d: %v at %v cost %d: allowed %v, x/time/rate %v", trial, i, b, now.Sub(t0), cost, d.Allowed, want)
			}
		}
	}
}

func TestRetention(t *testing.T) {
	rules := []Bucket{{Capacity: 4, Period: 8 * time.Second}, {Capacity: 100, Period: time.Hour}}
	st, _ := advanced(rules, fullState(rules, 0), 0, 4, true)
	if got, want := retention(rules, &st, 0), 145*time.Second; got != want {
		t.Errorf("retention after 4 of 100/h = %v, want %v", got, want)
	}
	if got, want := retention(rules, &st, -5*int64(time.Second)), 150*time.Second; got != want {
		t.Errorf("retention seen from 5s earlier = %v, want %v", got, want)
	}
}

// next_ is decide on a copy: it returns the advanced state beside the
// decision and leaves st as it was.
func advanced(rules []Bucket, st state, now, cost int64, take bool) (state, Decision) {
	d := decide(rules, &st, now, cost, take)
	return st, d
}

// randomCase draws the buckets and state of one random trial: one bucket
// from randBucket, or two distinct ones every pairEvery-th trial, last
// seen at a time below atBound, each at a random level (full in about one
// draw of Capacity+1).
func randomCase(rng *rand.Rand, randBucket func(trial int) Bucket, trial, pairEvery int, atBound int64) ([]Bucket, state) {
	rules := []Bucket{randBucket(trial)}
	if trial%pairEvery == 0 {
		if b := randBucket(trial + 1); b != rules[0] {
			rules = append(rules, b)
		}
	}
	st := fullState(rules, rng.Int64N(atBound))
	for i, b := range rules {
		if w := rng.Int64N(b.Capacity + 1); w < b.Capacity {
			st.levels[i] = level{whole: w, frac: rng.Int64N(int64(b.Period))}
		}
	}
	return rules, st
}

// keep is never less than retention, exceeds it by less than one token's
// time plus a nanosecond per missing token, and never by more than the
// longest Period: random buckets (one or two), levels, times (the clock
// going back included) and costs.
func TestKeepBoundsRetention(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	randBucket := func(trial int) Bucket {
		if trial%3 == 0 {
			return Bucket{Capacity: 1 + rng.Int64N(MaxCapacity), Period: time.Duration(1 + rng.Int64N(int64(MaxPeriod)))}
		}
		return Bucket{Capacity: 1 + rng.Int64N(1000), Period: time.Duration(1 + rng.Int64N(int64(time.Hour)))}
	}
	for trial := range 20000 {
		rules, st := randomCase(rng, randBucket, trial, 4, 1<<40)
		now := st.at + rng.Int64N(int64(rules[0].Period)) - int64(rules[0].Period)/4
		minCap := rules[0].Capacity
		for _, b := range rules {
			minCap = min(minCap, b.Capacity)
		}
		cost := 1 + rng.Int64N(minCap)
		decide(rules, &st, now, cost, rng.IntN(2) == 0)
		times := newTokenTimes(rules)
		got, exact := keep(rules, &times, &st, now), retention(rules, &st, now)
		if got < exact {
			t.Fatalf("trial %d: %v state %+v now %d: keep %v < retention %v", trial, rules, st, now, got, exact)
		}
		var slack, longest time.Duration
		for i, b := range rules {
			tok := time.Duration(times[i])
			slack = max(slack, tok+time.Duration(b.Capacity-st.levels[i].whole))
			longest = max(longest, b.Period)
		}
		if over := got - exact; over >= slack || over > longest {
			t.Fatalf("trial %d: %v state %+v now %d: keep %v exceeds retention %v by more than %v (or a Period)", trial, rules, st, now, got, exact, min(slack, longest))
		}
	}
	// Exact where a token's time is whole: 4 tokens of 100/h (36s each)
	// missing, as in TestRetention.
	rules := []Bucket{{Capacity: 4, Period: 8 * time.Second}, {Capacity: 100, Period: time.Hour}}
	st, _ := advanced(rules, fullState(rules, 0), 0, 4, true)
	times := newTokenTimes(rules)
	if got, want := keep(rules, &times, &st, 0), 145*time.Second; got != want {
		t.Errorf("keep after 4 of 100/h = %v, want %v", got, want)
	}
}

// decide is advance then describe: describing afterwards, from a copy of
// the state, gives the same Decision (the in-process path describes after
// the store's lock is released).
func TestAdvanceThenDescribe(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	for trial := range 20000 {
		b := Bucket{Capacity: 1 + rng.Int64N(1000), Period: time.Duration(1 + rng.Int64N(int64(time.Hour)))}
		rules := []Bucket{b, {Capacity: b.Capacity + 1 + rng.Int64N(100), Period: b.Period * 2}}[:1+trial%2]
		st := fullState(rules, rng.Int64N(1<<40))
		for i, r := range rules {
			if w := rng.Int64N(r.Capacity + 1); w < r.Capacity {
				st.levels[i] = level{whole: w, frac: rng.Int64N(int64(r.Period))}
			}
		}
		now := st.at + rng.Int64N(int64(b.Period)) - int64(b.Period)/4
		cost := 1 + rng.Int64N(b.Capacity)
		take := rng.IntN(4) != 0
		a, c := st, st
		want := decide(rules, &a, now, cost, take)
		allowed := advance(rules, &c, now, cost, take)
		copied := c
		var got Decision
		describe(&got, rules, &copied, now, cost, allowed)
		if got != want || c != a {
			t.Fatalf("trial %d: %v take %t: advance+describe %+v state %+v, decide %+v state %+v", trial, rules, take, got, c, want, a)
		}
	}
}

// TestDecideMatchesBigArithmetic checks one decision's refill, take and
// waits against the same quantities computed with big integers, for random
// buckets across the whole documented range (products above and below
// 2^64), levels, elapsed times and costs.
func TestDecideMatchesBigArithmetic(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 13))
	randBucket := func(trial int) Bucket {
		switch trial % 3 {
		case 0:
			return Bucket{Capacity: 1 + rng.Int64N(MaxCapacity), Period: time.Duration(1 + rng.Int64N(int64(MaxPeriod)))}
		case 1:
			return Bucket{Capacity: 1 + rng.Int64N(1000), Period: time.Duration(1 + rng.Int64N(int64(time.Hour)))}
		}
		return Bucket{Capacity: 1 << rng.IntN(41), Period: time.Duration(1+rng.Int64N(10)) * time.Second}
	}
	bi := big.NewInt
	// ceilDiv is ceil(a/b) for a >= 0.
	ceilDiv := func(a, b *big.Int) int64 {
		q, r := new(big.Int).QuoRem(a, b, new(big.Int))
		if r.Sign() != 0 {
			q.Add(q, bi(1))
		}
		if !q.IsInt64() {
			return 1<<63 - 1
		}
		return q.Int64()
	}
	for trial := range 30000 {
		rules, st := randomCase(rng, randBucket, trial, 5, 1<<50)
		elapsed := rng.Int64N(int64(rules[0].Period)) >> rng.IntN(40)
		minCap := rules[0].Capacity
		for _, b := range rules {
			minCap = min(minCap, b.Capacity)
		}
		cost := 1 + rng.Int64N(minCap)>>rng.IntN(40)

		// The reference: each level in units of 1/Capacity of a token's
		// Period, refilled by Capacity units per nanosecond, capped at
		// Capacity*Period.
		var want state
		want.at = st.at + elapsed
		allowed := true
		for i, b := range rules {
			c, p := bi(b.Capacity), bi(int64(b.Period))
			u := new(big.Int).Mul(bi(st.levels[i].whole), p)
			u.Add(u, bi(st.levels[i].frac))
			u.Add(u, new(big.Int).Mul(bi(elapsed), c))
			if full := new(big.Int).Mul(c, p); u.Cmp(full) >= 0 {
				u = full
			}
			w, f := new(big.Int).QuoRem(u, p, new(big.Int))
			want.levels[i] = level{whole: w.Int64(), frac: f.Int64()}
			if want.levels[i].whole < cost {
				allowed = false
			}
		}
		var retry int64
		for i, b := range rules {
			if allowed {
				want.levels[i].whole -= cost
				continue
			}
			if l := want.levels[i]; l.whole < cost {
				missing := new(big.Int).Mul(bi(cost-l.whole), bi(int64(b.Period)))
				retry = max(retry, ceilDiv(missing.Sub(missing, bi(l.frac)), bi(b.Capacity)))
			}
		}

		got := st
		d := decide(rules, &got, st.at+elapsed, cost, true)
		if got != want || d.Allowed != allowed || int64(d.RetryAfter) != retry {
			t.Fatalf("trial %d: %v from %+v after %d ns, cost %d: state %+v allowed %t retry %v; want %+v %t %v",
				trial, rules, st, elapsed, cost, got, d.Allowed, d.RetryAfter, want, allowed, time.Duration(retry))
		}
		// The binding bucket, found apart from binding(): the fewest whole
		// tokens, then the slowest to refill (Capacity_i*Period_j <
		// Capacity_j*Period_i, in big integers), then the first.
		bind := 0
		for i := 1; i < len(rules); i++ {
			wi, wb := want.levels[i].whole, want.levels[bind].whole
			rate := new(big.Int).Mul(bi(rules[i].Capacity), bi(int64(rules[bind].Period)))
			best := new(big.Int).Mul(bi(rules[bind].Capacity), bi(int64(rules[i].Period)))
			if wi < wb || wi == wb && rate.Cmp(best) < 0 {
				bind = i
			}
		}
		l, b := want.levels[bind], rules[bind]
		if d.Limit != b.Capacity || d.Remaining != l.whole {
			t.Fatalf("trial %d: %v state %+v: Limit %d Remaining %d, want %d %d (bucket %d)", trial, rules, want, d.Limit, d.Remaining, b.Capacity, l.whole, bind)
		}
		missing := new(big.Int).Mul(bi(b.Capacity-l.whole), bi(int64(b.Period)))
		if reset := ceilDiv(missing.Sub(missing, bi(l.frac)), bi(b.Capacity)); int64(d.ResetAfter) != reset {
			t.Fatalf("trial %d: %v state %+v: ResetAfter %v, want %v", trial, rules, want, d.ResetAfter, time.Duration(reset))
		}
	}
}
