package limiter

import (
	"math"
	"math/bits"
	"time"
)

// This file is the algorithm: pure integer arithmetic over the buckets of
// one key, with no I/O, clock or locks. Every method of Limiter meets here.
//
// A bucket's level is kept exactly as whole tokens plus a remainder. In
// units where one token is Period long, the bucket refills Capacity units
// per nanosecond; whole = level / Period and frac = level % Period. Taking
// n tokens lowers whole by n; frac carries the part of a token refilled so
// far, so no refill is ever lost to rounding. Products reach
// MaxCapacity*MaxPeriod (about 2^98) and are computed in 128 bits.

// level is one bucket's content.
type level struct {
	whole int64 // whole tokens, 0..Capacity
	frac  int64 // refill towards the next token, 0..Period-1 (0 when full)
}

// state is everything stored for one key: the latest time seen and every
// bucket's level, in the limiter's canonical bucket order.
type state struct {
	at     int64 // Unix nanoseconds; never moves backwards
	levels [MaxBuckets]level
}

// fullState is the state of a key seen for the first time at now: every
// bucket full.
func fullState(rules []Bucket, now int64) state {
	s := state{at: now}
	for i, b := range rules {
		s.levels[i] = level{whole: b.Capacity}
	}
	return s
}

// decide computes a call of the given cost at now against the state s,
// which it advances in place: every bucket refilled to now, and, when take
// is true and every bucket holds cost tokens, cost taken from each;
// otherwise nothing is taken. Time before s.at refills nothing. It returns
// the Decision. A state refilled without a take must not be kept in place
// of the stored one: it holds the refill up to now, which a clock set back
// below now has not earned yet.
func decide(rules []Bucket, s *state, now, cost int64, take bool) Decision {
	var d Decision
	describe(&d, rules, s, now, cost, advance(rules, s, now, cost, take))
	return d
}

// advance is the part of decide that changes s: it refills every bucket
// to now and, when take is true and every bucket holds cost tokens, takes
// cost from each. It reports whether every bucket held cost tokens. An
// in-process store's lock is held only for this part.
func advance(rules []Bucket, s *state, now, cost int64, take bool) bool {
	var elapsed uint64
	if now > s.at {
		elapsed = uint64(now) - uint64(s.at) // exact even when the difference overflows int64
		s.at = now
	}
	allowed := true
	for i, b := range rules {
		s.levels[i] = refill(b, s.levels[i], elapsed)
		if s.levels[i].whole < cost {
			allowed = false
		}
	}
	if allowed && take {
		for i := range rules {
			s.levels[i].whole -= cost
		}
	}
	return allowed
}

// describe is the part of decide that reads s: it writes to *d, which
// must be zero, the Decision for a call of the given cost that advance
// decided at now (allowed or not), leaving s as advance did.
func describe(d *Decision, rules []Bucket, s *state, now, cost int64, allowed bool) {
	skew := durationBetween(now, s.at) // > 0 only when the clock went back
	if !allowed {
		var wait time.Duration
		for i, b := range rules {
			if w := untilWhole(b, s.levels[i], cost); w > wait {
				wait = w
			}
		}
		d.RetryAfter = addSat(skew, wait)
	}
	bind := 0
	if len(rules) > 1 {
		bind = binding(rules, s)
	}
	d.Allowed = allowed
	d.Limit = rules[bind].Capacity
	d.Remaining = s.levels[bind].whole
	if w := untilWhole(rules[bind], s.levels[bind], rules[bind].Capacity); w > 0 {
		d.ResetAfter = addSat(skew, w) // a full bucket needs no wait, whatever the clock
	}
}

// retention is how long s must be kept at now: until every bucket is full
// again, plus a second, so that an expired record and a full bucket are the
// same thing.
func retention(rules []Bucket, s *state, now int64) time.Duration {
	var full time.Duration
	for i, b := range rules {
		if w := untilWhole(b, s.levels[i], b.Capacity); w > full {
			full = w
		}
	}
	return addSat(addSat(durationBetween(now, s.at), full), time.Second)
}

// tokenTimes are, per bucket in a limiter's order, the time one token
// takes to refill, rounded up: Period/Capacity. They let keep bound
// retention without a division.
type tokenTimes [MaxBuckets]uint64

// newTokenTimes returns the tokenTimes of rules.
func newTokenTimes(rules []Bucket) tokenTimes {
	var t tokenTimes
	for i, b := range rules {
		t[i] = (uint64(b.Period) + uint64(b.Capacity) - 1) / uint64(b.Capacity)
	}
	return t
}

// keep is a time to live for s at now that is at least retention(rules,
// s, now): per bucket, a token's time (see tokenTimes) for each missing
// whole token, at most a Period, plus a second. It exceeds retention by
// less than one token's time plus a nanosecond per missing token, and
// never by more than the longest Period. It divides nothing, so that the
// in-process path, which computes it under the store's lock, does not
// wait there for a division of its own.
func keep(rules []Bucket, t *tokenTimes, s *state, now int64) time.Duration {
	var full uint64
	for i, b := range rules {
		missing := uint64(b.Capacity - s.levels[i].whole)
		hi, lo := bits.Mul64(missing, t[i])
		if hi != 0 || lo > uint64(b.Period) {
			lo = uint64(b.Period) // a full Period refills any bucket
		}
		full = max(full, lo)
	}
	return addSat(durationBetween(now, s.at), time.Duration(full)+time.Second) // full <= MaxPeriod
}

// refill adds elapsed nanoseconds of refill to l.
func refill(b Bucket, l level, elapsed uint64) level {
	c, p := uint64(b.Capacity), uint64(b.Period)
	if uint64(l.whole) >= c || elapsed >= p {
		return level{whole: b.Capacity} // a full Period refills any bucket
	}
	hi, lo := bits.Mul64(elapsed, c) // < 2^98
	lo, carry := bits.Add64(lo, uint64(l.frac), 0)
	hi += carry
	if hi == 0 && lo < p {
		// Less than a token refilled: no division. Busy keys mostly take
		// this way.
		return level{whole: l.whole, frac: int64(lo)}
	}
	add, rem := bits.Div64(hi, lo, p) // quotient <= Capacity: no overflow
	if uint64(l.whole)+add >= c {
		return level{whole: b.Capacity}
	}
	return level{whole: l.whole + int64(add), frac: int64(rem)}
}

// untilWhole is the wait, rounded up to the nanosecond, until l holds n
// whole tokens.
func untilWhole(b Bucket, l level, n int64) time.Duration {
	if l.whole >= n {
		return 0
	}
	// Units missing: (n-whole)*Period - frac, then Capacity units arrive
	// per nanosecond.
	hi, lo := bits.Mul64(uint64(n-l.whole), uint64(b.Period))
	lo, borrow := bits.Sub64(lo, uint64(l.frac), 0)
	hi -= borrow
	q, r := bits.Div64(hi, lo, uint64(b.Capacity)) // quotient <= Period
	if r != 0 {
		q++
	}
	return time.Duration(q)
}

// binding returns the index of the bucket with the fewest whole tokens in
// s; on a tie, the one that refills slowest (lowest Capacity/Period); on a
// further tie, the first.
func binding(rules []Bucket, s *state) int {
	best := 0
	for i := 1; i < len(rules); i++ {
		a, b := s.levels[i].whole, s.levels[best].whole
		if a < b || a == b && slower(rules[i], rules[best]) {
			best = i
		}
	}
	return best
}

// slower reports whether a refills more slowly than b:
// a.Capacity/a.Period < b.Capacity/b.Period, compared exactly.
func slower(a, b Bucket) bool {
	ah, al := bits.Mul64(uint64(a.Capacity), uint64(b.Period))
	bh, bl := bits.Mul64(uint64(b.Capacity), uint64(a.Period))
	return ah < bh || ah == bh && al < bl
}

// durationBetween returns to-from, saturated at 0 and math.MaxInt64.
func durationBetween(from, to int64) time.Duration {
	if to <= from {
		return 0
	}
	d := uint64(to) - uint64(from)
	if d > math.MaxInt64 {
		return math.MaxInt64
	}
	return time.Duration(d)
}

// addSat adds two non-negative durations, saturating at math.MaxInt64.
func addSat(a, b time.Duration) time.Duration {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// refund gives n tokens back to every bucket of s at now, in place, never
// above capacity.
func refund(rules []Bucket, s *state, now, n int64) {
	advance(rules, s, now, 1, false) // refill to now
	for i, b := range rules {
		if s.levels[i].whole >= b.Capacity-n {
			s.levels[i] = level{whole: b.Capacity}
		} else {
			s.levels[i].whole += n
		}
	}
}
