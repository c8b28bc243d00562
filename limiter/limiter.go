package limiter

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/sluice-go/sluice/storage"
)

// MaxKeyLen is the longest key a Limiter accepts, in bytes.
const MaxKeyLen = 1024

// maxAttempts bounds the compare-and-swaps of one store call before
// ErrContention.
const maxAttempts = 16

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
type Limiter struct {
	store  storage.Store
	rules  []Bucket // canonical order: by Period, then Capacity
	fp     uint32
	prefix string // name + ":"
	clock  Clock
	cache  *cache
}

// New returns a Limiter that keeps its state in store and admits a call
// only when every bucket can pay for it. Buckets may be given in any
// order; the same bucket twice, none, or more than MaxBuckets is an error,
// as is a nil store.
func New(store storage.Store, buckets []Bucket, opts ...Option) (*Limiter, error) {
	if store == nil {
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
		opt(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if !cfg.nameSet {
		cfg.name = defaultName(rules)
	}
	return &Limiter{
		store:  store,
		rules:  rules,
		fp:     fingerprint(rules),
		prefix: cfg.name + ":",
		clock:  cfg.clock,
		cache:  newCache(cfg.cacheSize),
	}, nil
}

// Buckets returns the limiter's buckets in its canonical order (by
// Period, then Capacity).
func (l *Limiter) Buckets() []Bucket { return slices.Clone(l.rules) }

// Allow is shorthand for AllowN(ctx, key, 1).
func (l *Limiter) Allow(ctx context.Context, key string) (Decision, error) {
	return l.AllowN(ctx, key, 1)
}

// AllowN reports whether a call of the given cost on key may happen now,
// and if so takes cost tokens from every bucket. If any bucket holds fewer
// than cost tokens, nothing is taken and the Decision says how long to
// wait. It never blocks on the limit itself, only on the store.
//
// An error means the outcome is unknown or the input is refused; it is
// never a disguised allow or deny. Store failures wrap
// storage.ErrUnavailable, and context errors are returned as they are.
func (l *Limiter) AllowN(ctx context.Context, key string, cost int64) (Decision, error) {
	if err := l.check(key, cost); err != nil {
		return Decision{}, err
	}
	s := l.cache.get(key, l.prefix)
	// An exhausted key is denied from the last record seen: other writers
	// can only have taken tokens since, never added them.
	if s.have {
		if _, d := decide(l.rules, s.st, l.now(), cost, false); !d.Allowed {
			s.mu.Unlock()
			return d, nil
		}
	}
	if !s.busy {
		s.busy = true
		s.mu.Unlock()
		d, err := l.lead(ctx, s, cost, nil)
		l.cache.release(key, s)
		return d, err
	}
	w := &waiter{cost: cost, done: make(chan struct{})}
	s.pending = append(s.pending, w)
	s.mu.Unlock()
	d, err := l.await(ctx, s, w)
	l.cache.release(key, s)
	return d, err
}

// Wait blocks until a call of cost 1 on key is allowed (and takes the
// token) or ctx ends. If ctx has a deadline that the wait cannot meet, Wait
// fails at once with an error wrapping context.DeadlineExceeded instead of
// sleeping in vain.
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
		select {
		case <-l.clock.After(d.RetryAfter):
		case <-ctx.Done():
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
	storeKey := l.prefix + key
	rec, err := l.store.Get(ctx, storeKey)
	if err != nil {
		return Decision{}, err
	}
	now := l.now()
	st, err := l.decode(storeKey, rec, now)
	if err != nil {
		return Decision{}, err
	}
	if s := l.cache.lookup(key); s != nil {
		if !s.have || rec.Version > s.version {
			s.have, s.version, s.st = true, rec.Version, st
		}
		s.mu.Unlock()
	}
	_, d := decide(l.rules, st, now, 1, false)
	return d, nil
}

// Reset makes key's buckets full again by deleting its record.
func (l *Limiter) Reset(ctx context.Context, key string) error {
	if err := l.check(key, 1); err != nil {
		return err
	}
	err := l.store.Delete(ctx, l.prefix+key)
	// Forget the cached record even on error: the delete may have landed.
	if s := l.cache.lookup(key); s != nil {
		s.gen++
		s.have = false
		s.mu.Unlock()
	}
	return err
}

func (l *Limiter) now() int64 { return l.clock.Now().UnixNano() }

// check validates a call's key and cost.
func (l *Limiter) check(key string, cost int64) error {
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrInvalidKey)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("%w: key of %d bytes, at most %d", ErrInvalidKey, len(key), MaxKeyLen)
	}
	for i := 0; i < len(key); i++ {
		if key[i] == 0 {
			return fmt.Errorf("%w: key %q holds a NUL byte", ErrInvalidKey, key)
		}
	}
	if cost <= 0 {
		return fmt.Errorf("%w: %d", ErrInvalidCost, cost)
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
	if rec.Version == 0 {
		return fullState(l.rules, now), nil
	}
	st, err := decodeState(rec.Value, l.fp, l.rules)
	if errors.Is(err, errOtherBuckets) {
		return fullState(l.rules, now), nil
	}
	if err != nil {
		return st, fmt.Errorf("limiter: key %q: %w: %v", storeKey, storage.ErrCorrupt, err)
	}
	return st, nil
}

// A waiter is a call that arrived while another call on the same key had
// a store call in flight.
type waiter struct {
	cost  int64
	done  chan struct{} // closed when d and err are set, or when leading
	state waiterState   // guarded by the slot's mu
	batch []*waiter     // when leading: the calls to decide with it
	d     Decision
	err   error
}

type waiterState int

const (
	queued    waiterState = iota // in slot.pending
	batched                      // taken into a flight; d and err will be set
	leading                      // handed the next flight
	abandoned                    // its caller left (context done)
)

// await waits for w's decision, or for w to be handed the next flight.
func (l *Limiter) await(ctx context.Context, s *slot, w *waiter) (Decision, error) {
	select {
	case <-w.done:
	case <-ctx.Done():
		s.mu.Lock()
		switch w.state {
		case queued:
			s.pending = slices.DeleteFunc(s.pending, func(x *waiter) bool { return x == w })
			w.state = abandoned
			s.mu.Unlock()
			return Decision{}, ctx.Err()
		case batched:
			// Its cost may be counted by the flight in progress; the
			// caller is told the outcome is unknown.
			w.state = abandoned
			s.mu.Unlock()
			return Decision{}, ctx.Err()
		}
		s.mu.Unlock()
		<-w.done // leading: the handover is done or about to be
	}
	if w.state == leading { // set before done was closed
		return l.lead(ctx, s, w.cost, w.batch)
	}
	return w.d, w.err
}

// lead runs one flight for a call of the given cost and the batch handed to
// it, then hands the calls that queued meanwhile to the first of them.
// s.busy is set by the caller.
func (l *Limiter) lead(ctx context.Context, s *slot, cost int64, batch []*waiter) (Decision, error) {
	s.mu.Lock()
	// Callers that left while the batch was handed over are not counted.
	batch = slices.DeleteFunc(batch, func(w *waiter) bool { return w.state == abandoned })
	for _, w := range s.pending {
		w.state = batched
		batch = append(batch, w)
	}
	s.pending = s.pending[:0]
	have, version, st, gen := s.have, s.version, s.st, s.gen
	s.mu.Unlock()

	d, err := l.flight(ctx, s, cost, batch, have, version, st, gen)

	// A flight that failed only because this caller's context ended must
	// not fail the others: they go to the next leader.
	var retry []*waiter
	if err != nil && ctx.Err() != nil {
		retry = batch
	} else {
		for _, w := range batch {
			close(w.done)
		}
	}

	s.mu.Lock()
	next := append(retry, s.pending...)
	s.pending = s.pending[:0]
	var leader *waiter
	for i, w := range next {
		if w.state == abandoned {
			continue
		}
		leader = w
		leader.state = leading
		leader.batch = next[i+1:]
		for _, b := range leader.batch {
			if b.state == queued {
				b.state = batched
			}
		}
		break
	}
	s.busy = leader != nil
	s.mu.Unlock()
	if leader != nil {
		close(leader.done)
	}
	return d, err
}

// flight decides the leader's call and its batch against the store: one
// compare-and-swap for all of them, retried from the returned record on
// conflict. It sets each batched waiter's d and err.
func (l *Limiter) flight(ctx context.Context, s *slot, cost int64, batch []*waiter, have bool, version uint64, cur state, gen uint64) (Decision, error) {
	if !have {
		// Assume absent: right for a new key at no cost, and a conflict
		// returns the record otherwise.
		version, cur = 0, fullState(l.rules, l.now())
	}
	fail := func(err error) (Decision, error) {
		s.mu.Lock()
		if s.gen == gen {
			s.have = false // the write may have landed: read again next time
		}
		s.mu.Unlock()
		for _, w := range batch {
			w.err = err
		}
		return Decision{}, err
	}
	for attempt := 1; ; attempt++ {
		now := l.now()
		st, d := decide(l.rules, cur, now, cost, true)
		wrote := d.Allowed
		for _, w := range batch {
			var wd Decision
			st, wd = decide(l.rules, st, now, w.cost, true)
			w.d, wrote = wd, wrote || wd.Allowed
		}
		if !wrote {
			// All denied: nothing to write.
			return d, nil
		}
		s.buf = encodeState(s.buf[:0], l.fp, l.rules, &st)
		rec, swapped, err := l.store.CompareAndSwap(ctx, s.key, version, s.buf, retention(l.rules, &st, now))
		if err != nil {
			return fail(err)
		}
		if swapped {
			s.mu.Lock()
			if s.gen == gen {
				s.have, s.version, s.st = true, rec.Version, st
			}
			s.mu.Unlock()
			return d, nil
		}
		if attempt == maxAttempts {
			return fail(fmt.Errorf("%w: key %q: %d compare-and-swaps lost", ErrContention, s.key, attempt))
		}
		if cur, err = l.decode(s.key, rec, now); err != nil {
			return fail(err)
		}
		version = rec.Version
		if attempt > 1 {
			if err := backoff(ctx, attempt); err != nil {
				return fail(err)
			}
		}
	}
}

// backoff sleeps a random time that grows with the attempt, up to about
// 10ms; the first retry does not wait, since it already has the record.
func backoff(ctx context.Context, attempt int) error {
	ceiling := time.Duration(50<<min(attempt, 8)) * time.Microsecond
	t := time.NewTimer(rand.N(ceiling) + time.Microsecond)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
