package limiter

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	"github.com/sluice-go/sluice/internal/typednil"
	"github.com/sluice-go/sluice/storage"
)

// MaxKeyLen is the longest key a Limiter accepts, in bytes.
const MaxKeyLen = 1024

// maxAttempts bounds the compare-and-swaps of one store call before
// ErrContention.
const maxAttempts = 32

// Limiter rate-limits calls by key with one or more token buckets kept in
// a storage.Store. Every key starts with full buckets, each of which
// refills Capacity tokens per Period. Allow and AllowN decide at once and
// take tokens only when every bucket can pay; when one cannot, nothing is
// taken and the Decision says how long to wait. Wait blocks until a token
// is there instead. Most servers want Allow.
//
// A Limiter is safe for concurrent use by any number of goroutines, and
// limiters in many processes may share one store: the package
// documentation explains how one compare-and-swap decides each call.
// Make Limiters with New: the methods of a zero Limiter return an error
// wrapping ErrNilStore.
type Limiter struct {
	store   storage.Store
	timed   storage.TimedStore   // set with WithStoreClock
	inPlace storage.InPlaceStore // an in-process store, decided under its hold on the key
	// ownClock is set when a clock was given (WithClock). Otherwise an
	// in-process store's clock serves: it is the wall clock advanced by
	// the monotonic one, read once per decision, and the same for every
	// limiter on the store. See also storeTTL.
	ownClock bool
	// minCapacity is the smallest Capacity: no cost above it can pass.
	minCapacity int64
	rules       []Bucket // canonical order: by Period, then Capacity
	tokenTimes  tokenTimes
	fp          uint32
	prefix      string // name + ":"
	clock       Clock
	cache       *cache
	observer    Observer
	dryRun      bool
	fallback    *Limiter

	offset      atomic.Int64 // store clock minus local clock, in ns (see learn)
	offsetKnown atomic.Bool
}

// New returns a Limiter that keeps its state in store and admits a call
// only when every bucket can pay for it. Buckets may be given in any
// order; the same bucket twice, none, or more than MaxBuckets is an error,
// as is a nil store (or a nil pointer given as one).
func New(store storage.Store, buckets []Bucket, opts ...Option) (*Limiter, error) {
	if typednil.Is(store) {
		return nil, ErrNilStore
	}
	if len(buckets) == 0 {
		return nil, fmt.Errorf("%w: no buckets", ErrInvalidBucket)
	}
	if len(buckets) > MaxBuckets {
		return nil, fmt.Errorf("%w: %d buckets, at most %d", ErrInvalidBucket, len(buckets), MaxBuckets)
	}
	rules := slices.Clone(buckets)
	for _, b := range rules {
		if err := b.validate(); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(rules, func(a, b Bucket) int {
		if a.Period != b.Period {
			return int(min(max(a.Period-b.Period, -1), 1))
		}
		return int(min(max(a.Capacity-b.Capacity, -1), 1))
	})
	for i := 1; i < len(rules); i++ {
		if rules[i] == rules[i-1] {
			return nil, fmt.Errorf("%w: %v given twice", ErrInvalidBucket, rules[i])
		}
	}
	cfg := config{clock: systemClock{}, cacheSize: 16384}
	for _, opt := range opts {
		if opt != nil { // a nil Option sets nothing
			opt(&cfg)
		}
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ip, inPlace := store.(storage.InPlaceStore)
	if inPlace && cfg.storeClock {
		// An in-process store's clock, which its holds report and it
		// expires records by, is the store's clock: the limiter decides
		// and waits on it as when given no clock.
		cfg.clock = systemClock{}
	}
	fp := fingerprint(rules)
	prefix := defaultName(rules) + ":"
	if cfg.nameSet {
		// The buckets' fingerprint keeps limiters that share a name but
		// not their buckets (a rolling deploy of a new limit) from
		// overwriting each other's records.
		prefix = fmt.Sprintf("%s@%08x:", cfg.name, fp)
	}
	l := &Limiter{
		store:    store,
		rules:    rules,
		fp:       fp,
		prefix:   prefix,
		clock:    cfg.clock,
		cache:    newCache(cfg.cacheSize),
		observer: cfg.observer,
		dryRun:   cfg.dryRun,
		fallback: cfg.fallback,
	}
	l.tokenTimes = newTokenTimes(rules)
	_, system := cfg.clock.(systemClock)
	l.ownClock = !system
	l.minCapacity = rules[0].Capacity
	for _, b := range rules {
		l.minCapacity = min(l.minCapacity, b.Capacity)
	}
	switch timed, ok := store.(storage.TimedStore); {
	case inPlace:
		l.inPlace = ip
	case cfg.storeClock && !ok:
		return nil, fmt.Errorf("%w: WithStoreClock: the store (%T) cannot report its clock (it implements neither storage.TimedStore nor storage.InPlaceStore)", ErrInvalidOption, store)
	case cfg.storeClock:
		l.timed = timed
		l.offset.Store(math.MinInt64) // below any offset a reply shows: see learn
	}
	return l, nil
}

// Buckets returns the limiter's buckets in its canonical order (by
// Period, then Capacity).
func (l *Limiter) Buckets() []Bucket { return slices.Clone(l.rules) }

// Fallback returns the limiter given to WithFallback, or nil. Its
// Decisions come back with Fallback set, and describe its own buckets.
func (l *Limiter) Fallback() *Limiter { return l.fallback }

// Allow is shorthand for AllowN(ctx, key, 1).
func (l *Limiter) Allow(ctx context.Context, key string) (d Decision, err error) {
	err = l.allowN(ctx, key, 1, &d)
	return d, err
}

// AllowN reports whether a call of the given cost on key may happen now,
// and if so takes cost tokens from every bucket. If any bucket holds fewer
// than cost tokens, nothing is taken and the Decision says how long to
// wait. It never blocks on the limit itself, only on the store.
//
// An error means the outcome is unknown or the input is refused; it is
// never a disguised allow or deny. Store failures wrap
// storage.ErrUnavailable (after Close, with storage.ErrClosed); a stored
// record that cannot be read wraps storage.ErrCorrupt instead. A ctx that
// is done before the call returns ctx.Err() as it is; one that ends during
// it returns an error matching ctx.Err() (errors.Is), which also matches
// storage.ErrUnavailable when the store reports the outcome as unknown.
func (l *Limiter) AllowN(ctx context.Context, key string, cost int64) (d Decision, err error) {
	err = l.allowN(ctx, key, cost, &d)
	return d, err
}

// allowN is AllowN, writing the Decision to *d, which must be zero.
func (l *Limiter) allowN(ctx context.Context, key string, cost int64, d *Decision) error {
	if err := l.check(key, cost); err != nil {
		return err
	}
	var start time.Time
	if l.observer != nil {
		start = time.Now()
	}
	st, err := l.do(ctx, key, op{cost: cost}, d)
	if err != nil {
		*d, err = l.failed(ctx, "AllowN", key, cost, start, st, err)
		return err
	}
	if l.observer != nil {
		l.observer.OnDecision(Event{Method: "AllowN", Key: key, Cost: cost, Decision: *d, Latency: time.Since(start),
			StoreCalls: st.calls, Retries: st.retries, Cached: st.cached, DryRun: l.dryRun})
	}
	if l.dryRun && !d.Allowed {
		d.Allowed, d.DryRun = true, true
	}
	return nil
}

// Refund gives n tokens back to every bucket of key, never above its
// capacity: for work that was admitted but not done. It is exact under
// concurrency, like AllowN.
func (l *Limiter) Refund(ctx context.Context, key string, n int64) error {
	if err := l.checkKey(key); err != nil {
		return err
	}
	if n <= 0 {
		return fmt.Errorf("%w: refund of %d", ErrInvalidCost, n)
	}
	var start time.Time
	if l.observer != nil {
		start = time.Now()
	}
	var d Decision
	st, err := l.do(ctx, key, op{cost: n, refund: true}, &d)
	if err != nil {
		l.observeError("Refund", key, n, start, st, err)
		if l.fallback != nil && fallsBack(ctx, err) {
			return l.fallback.Refund(ctx, key, n)
		}
		return err
	}
	return nil
}

// Wait blocks until a call of cost 1 on key is allowed (and takes the
// token) or ctx ends. If ctx has a deadline that the wait cannot meet, Wait
// fails at once with an error wrapping context.DeadlineExceeded instead of
// sleeping in vain. It returns the first error of the calls it makes.
func (l *Limiter) Wait(ctx context.Context, key string) error {
	for {
		d, err := l.AllowN(ctx, key, 1)
		if err != nil {
			return err
		}
		if d.Allowed {
			return nil
		}
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < d.RetryAfter {
			return fmt.Errorf("limiter: wait of %v for %q would exceed the context deadline: %w", d.RetryAfter, key, context.DeadlineExceeded)
		}
		wake, stop := l.after(d.RetryAfter)
		select {
		case <-wake:
			stop()
		case <-ctx.Done():
			stop()
			return ctx.Err()
		}
	}
}

// Peek reports the state of key now without taking anything: Remaining is
// the whole tokens available now, Allowed whether a call of cost 1 would
// pass now, and RetryAfter the wait until it would. It reads the store.
func (l *Limiter) Peek(ctx context.Context, key string) (Decision, error) {
	if err := l.check(key, 1); err != nil {
		return Decision{}, err
	}
	var start time.Time
	if l.observer != nil {
		start = time.Now()
	}
	if l.inPlace != nil {
		st, now, err := l.peekLocal(ctx, key)
		if err != nil {
			return l.failed(ctx, "Peek", key, 0, start, stats{calls: 1}, err)
		}
		d := decide(l.rules, &st, now, 1, false)
		if l.observer != nil {
			l.observer.OnDecision(Event{Method: "Peek", Key: key, Decision: d, Latency: time.Since(start), StoreCalls: 1, DryRun: l.dryRun})
		}
		return d, nil
	}
	// What was read is cached only if no Reset came in between.
	// The slot, not only its gen, must be the same: a slot evicted and
	// made again starts at gen 0 whatever Resets the old one saw.
	var gen uint64
	var first *slot
	if s := l.cache.lookup(key); s != nil {
		gen, first = s.gen, s
		s.mu.Unlock()
	}
	storeKey := l.prefix + key
	rec, err := l.get(ctx, storeKey)
	var st state
	if err == nil {
		st, err = l.decode(storeKey, rec, l.now())
	}
	if err != nil {
		return l.failed(ctx, "Peek", key, 0, start, stats{calls: 1}, err)
	}
	now := l.now()
	if s := l.cache.lookup(key); s != nil {
		if s == first && s.gen == gen {
			switch {
			case rec.Version == 0:
				// Absent now: reset or expired since the cached record, or
				// absent before a write of this limiter's that the read did
				// not see. Forgetting is right either way.
				s.have = false
			case !s.have || rec.Version > s.version:
				s.remember(rec.Version, st, now, deadline(now, retention(l.rules, &st, now)))
			case rec.Version == s.version:
				s.seen = now // the cached record is still the store's
			}
		}
		s.mu.Unlock()
	}
	d := decide(l.rules, &st, now, 1, false)
	if l.observer != nil {
		l.observer.OnDecision(Event{Method: "Peek", Key: key, Decision: d, Latency: time.Since(start), StoreCalls: 1, DryRun: l.dryRun})
	}
	return d, nil
}

// Reset makes key's buckets full again by deleting its record (and the
// fallback limiter's, if any).
func (l *Limiter) Reset(ctx context.Context, key string) error {
	if err := l.checkKey(key); err != nil {
		return err
	}
	var start time.Time
	if l.observer != nil {
		start = time.Now()
	}
	storeKey := l.prefix + key
	err := storeError(l.store.Delete(ctx, storeKey), storeKey)
	// Forget the cached record even on error: the delete may have landed.
	if s := l.cache.lookup(key); s != nil {
		s.gen++
		s.have = false
		s.mu.Unlock()
	}
	if l.fallback != nil {
		if ferr := l.fallback.Reset(ctx, key); err == nil {
			err = ferr
		}
	}
	if err != nil {
		l.observeError("Reset", key, 0, start, stats{calls: 1}, err)
	}
	return err
}

// failed reports a failed call and lets the fallback limiter decide
// instead when there is one and the error is the store's.
func (l *Limiter) failed(ctx context.Context, method, key string, cost int64, start time.Time, st stats, err error) (Decision, error) {
	l.observeError(method, key, cost, start, st, err)
	if l.fallback == nil || !fallsBack(ctx, err) {
		return Decision{}, err
	}
	var d Decision
	var ferr error
	if method == "Peek" {
		d, ferr = l.fallback.Peek(ctx, key)
	} else {
		d, ferr = l.fallback.AllowN(ctx, key, cost)
	}
	switch {
	case errors.Is(ferr, ErrCostExceedsCapacity):
		// The cost fits this limiter's buckets but not the fallback's
		// (made smaller, as a share of a limit kept across processes):
		// the fallback cannot decide it, and the store's failure stands.
		return Decision{}, err
	case ferr != nil:
		return Decision{}, ferr
	}
	d.Fallback = true
	if l.observer != nil {
		// Observers get the real decision: a fallback made WithDryRun has
		// turned its denial into an allow.
		actual := d
		if actual.DryRun {
			actual.Allowed, actual.DryRun = false, false
		}
		l.observer.OnDecision(Event{Method: method, Key: key, Cost: cost, Decision: actual, Latency: time.Since(start),
			StoreCalls: st.calls, Retries: st.retries, Fallback: true, DryRun: l.dryRun || d.DryRun})
	}
	// A dry run allows what it would deny; Peek reports, as without a
	// fallback, what a call would get.
	if l.dryRun && !d.Allowed && method != "Peek" {
		d.Allowed, d.DryRun = true, true
	}
	return d, nil
}

func (l *Limiter) observeError(method, key string, cost int64, start time.Time, st stats, err error) {
	if l.observer != nil {
		l.observer.OnError(Event{Method: method, Key: key, Cost: cost, Err: err, Latency: time.Since(start),
			StoreCalls: st.calls, Retries: st.retries, DryRun: l.dryRun})
	}
}

// fallsBack reports whether err is the store's failure, which the fallback
// limiter may cover, rather than the caller's context ending. While ctx is
// live, a context error is the store's own (a timeout of a driver's), with
// one exception: a deadline error once ctx's deadline has passed, which ctx
// may not report yet.
func fallsBack(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
			return false
		}
	}
	return true
}

// now returns the time to decide on, in Unix nanoseconds: the clock's,
// plus the store clock's offset when the limiter uses it.
func (l *Limiter) now() int64 {
	if l.offsetKnown.Load() {
		// The store's time: the local clock's reading plus the offset
		// learnt from it, with the same (wrapping) arithmetic as learn, so
		// that a local clock beyond the years of Unix nanoseconds cancels
		// out.
		return l.clock.Now().UnixNano() + l.offset.Load()
	}
	return unixNano(l.clock.Now())
}

// learn records what a reply says of the store's clock: server, read by
// the store at some instant between local times sent (before the call)
// and received (after its reply).
func (l *Limiter) learn(server, sent, received time.Time) {
	if server.IsZero() {
		return
	}
	// received.Sub(sent) is measured on the monotonic clock when both
	// carry one (the system clock's readings do), so that a step of the
	// wall clock during the call is not taken for a slow reply.
	l.learnOffset(unixNano(server)-received.UnixNano(), max(received.Sub(sent), 0))
}

// learnOffset moves the offset the limiter decides with (store clock
// minus local clock) by what one reply shows: low, the store's time minus
// the local time the reply arrived at, is a lower bound of the offset
// (the store read its clock before it replied), and low+rtt an upper
// bound (it read it after the call was made). The offset never goes
// ahead of the store on this evidence:
//
//   - it rises to a greater lower bound, but does not fall to a smaller
//     one: a reply that took long, or waited in a pipeline or a batch
//     behind others, gives a low one, and taking it would set the
//     limiter's time back by its delay, so that a caller that waited an
//     earlier decision's RetryAfter could be denied again;
//   - when an upper bound falls below it (the store's clock went back, or
//     the local one stepped or runs ahead), it falls to that reply's lower
//     bound, not to the upper one, which is ahead of the store by the time
//     the call waited before the store read its clock.
//
// The price: a change of either clock smaller than the time every call
// waits before the store reads its clock leaves each reply consistent
// with the old offset, which then stays ahead of the store by at most that
// change, until a quicker call shows it. Taking each reply's lower bound
// as the offset, as the first releases did, stays behind the store but
// moves by every reply's latency: it denied callers that waited their
// RetryAfter, and it spreads the times of processes by their latency (up
// to a second under load), a larger error over windows of real time.
//
// Offsets are compared by their wrapping difference, as now adds them, so
// that a local clock beyond the years of Unix nanoseconds does not flip
// the comparisons.
func (l *Limiter) learnOffset(low int64, rtt time.Duration) {
	high := low + int64(rtt)
	for {
		cur := l.offset.Load() // math.MinInt64 until the first reply
		next := cur
		if cur == math.MinInt64 || low-cur > 0 || high-cur < 0 {
			next = low
		}
		if next == cur || l.offset.CompareAndSwap(cur, next) {
			break
		}
	}
	if !l.offsetKnown.Load() {
		l.offsetKnown.Store(true)
	}
}

// Unix nanoseconds cover the years 1678 to 2262; beyond them, UnixNano
// wraps around.
var (
	minUnixNano = time.Unix(0, math.MinInt64)
	maxUnixNano = time.Unix(0, math.MaxInt64)
)

// unixNano is t.UnixNano(), saturated for a time beyond the years it can
// express, so that a clock set far back reads as the earliest time (and
// refills nothing) rather than wrapping to a time far ahead.
func unixNano(t time.Time) int64 {
	switch {
	case t.Before(minUnixNano):
		return math.MinInt64
	case t.After(maxUnixNano):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// get reads a record, learning the store's clock when the limiter uses it.
func (l *Limiter) get(ctx context.Context, storeKey string) (storage.Record, error) {
	if l.timed == nil {
		rec, err := l.store.Get(ctx, storeKey)
		return rec, storeError(err, storeKey)
	}
	sent := l.clock.Now()
	rec, at, err := l.timed.GetTimed(ctx, storeKey)
	if err == nil {
		l.learn(at, sent, l.clock.Now())
	}
	return rec, storeError(err, storeKey)
}

// storeError is an error of a store call on storeKey as the limiter
// returns it: a context error, or one that already matches
// storage.ErrUnavailable or storage.ErrCorrupt, as it is (the drivers name
// the key in theirs); one that matches storage.ErrClosed (the drivers
// name the key in that one too) wrapped to match storage.ErrUnavailable;
// any other, the bare error of a store that does not wrap its failures,
// wrapped to match storage.ErrUnavailable, with the key named.
func storeError(err error, storeKey string) error {
	switch {
	case err == nil || isContextErr(err) || errors.Is(err, storage.ErrUnavailable) || errors.Is(err, storage.ErrCorrupt):
		return err
	case errors.Is(err, storage.ErrClosed):
		return fmt.Errorf("limiter: store: %w: %w", storage.ErrUnavailable, err)
	}
	return fmt.Errorf("limiter: store, key %q: %w: %w", storeKey, storage.ErrUnavailable, err)
}

// cas swaps a record, learning the store's clock when the limiter uses it.
func (l *Limiter) cas(ctx context.Context, storeKey string, expected uint64, value []byte, ttl time.Duration) (storage.Record, bool, error) {
	if l.timed == nil {
		rec, swapped, err := l.store.CompareAndSwap(ctx, storeKey, expected, value, ttl)
		return rec, swapped, storeError(err, storeKey)
	}
	sent := l.clock.Now()
	rec, swapped, at, err := l.timed.CompareAndSwapTimed(ctx, storeKey, expected, value, ttl)
	if err == nil {
		l.learn(at, sent, l.clock.Now())
	}
	return rec, swapped, storeError(err, storeKey)
}

// checkKey validates a key.
func (l *Limiter) checkKey(key string) error {
	if l.rules == nil {
		return fmt.Errorf("%w: a zero Limiter; make one with New", ErrNilStore)
	}
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrInvalidKey)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("%w: key of %d bytes, at most %d", ErrInvalidKey, len(key), MaxKeyLen)
	}
	return nil
}

// check validates a call's key and cost.
func (l *Limiter) check(key string, cost int64) error {
	if err := l.checkKey(key); err != nil {
		return err
	}
	if cost <= 0 {
		return fmt.Errorf("%w: %d", ErrInvalidCost, cost)
	}
	if cost <= l.minCapacity {
		return nil
	}
	for _, b := range l.rules {
		if cost > b.Capacity {
			return fmt.Errorf("%w: cost %d, bucket %v", ErrCostExceedsCapacity, cost, b)
		}
	}
	return nil
}

// decode turns a stored record into a state; an absent record, or one
// written for other buckets, is a full bucket at now.
func (l *Limiter) decode(storeKey string, rec storage.Record, now int64) (state, error) {
	var st state
	if err := l.decodeInto(&st, rec, now); err != nil {
		return st, l.corrupt(storeKey, err)
	}
	return st, nil
}

// decodeInto is decode into *st, which must be the zero state, with the
// bare reason of a failure.
func (l *Limiter) decodeInto(st *state, rec storage.Record, now int64) error {
	if rec.Version != 0 {
		err := decodeInto(st, rec.Value, l.fp, l.rules)
		if err != errOtherBuckets {
			return err
		}
		*st = state{}
	}
	st.at = now
	for i, b := range l.rules {
		st.levels[i].whole = b.Capacity
	}
	return nil
}

// minOwnClockTTL is the shortest time to live a limiter with a clock of
// its own asks a store for. Stores expire records on their own clocks; a
// test clock that stands still would otherwise see a key full again as
// soon as its record expired in real time.
const minOwnClockTTL = time.Minute

// storeTTL is the time to live to ask the store for, for a record that
// must be kept ttl on the limiter's clock: ttl itself on the system clock,
// and at least minOwnClockTTL on a clock given with WithClock.
func (l *Limiter) storeTTL(ttl time.Duration) time.Duration {
	if l.ownClock {
		return max(ttl, minOwnClockTTL)
	}
	return ttl
}

// corrupt is the error for the undecodable record of storeKey.
func (l *Limiter) corrupt(storeKey string, reason error) error {
	return fmt.Errorf("limiter: key %q: %w: %v", storeKey, storage.ErrCorrupt, reason)
}

// immediateRetries is how many lost compare-and-swaps are retried at once,
// before backoff.
const immediateRetries = 4

// backoff sleeps a random time whose ceiling doubles with n, from 100µs up
// to about 6ms, so that writers that keep colliding spread out.
func backoff(ctx context.Context, n int) error {
	ceiling := time.Duration(100<<min(n, 6)) * time.Microsecond
	t := time.NewTimer(rand.N(ceiling) + time.Microsecond)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
