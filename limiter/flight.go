package limiter

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync/atomic"
	"time"

	"github.com/sluice-go/sluice/internal/pipeline"
	"github.com/sluice-go/sluice/storage"
)

// This file is the compare-and-swap loop, with its batching: per key, at
// most one store call is in flight; calls that arrive meanwhile queue and
// are decided together, in arrival order, by the next one.

// op is one call to decide: take cost tokens, or give them back.
type op struct {
	cost   int64
	refund bool
}

// stats describe how a call was decided, for observers.
type stats struct {
	calls   int  // store calls
	retries int  // compare-and-swaps lost
	cached  bool // denied from the cache
}

// do decides o on key, writing the Decision to *d: in an in-process store
// under its hold on the key, or else through the compare-and-swap loop.
func (l *Limiter) do(ctx context.Context, key string, o op, d *Decision) (stats, error) {
	if l.inPlace != nil {
		return l.local(ctx, key, o, d)
	}
	var st stats
	var err error
	*d, st, err = l.remote(ctx, key, o)
	return st, err
}

// remote is do on a store that is not in-process: from the cache when it
// can only be a denial, otherwise in a flight of its own or in the batch
// of another call's.
func (l *Limiter) remote(ctx context.Context, key string, o op) (Decision, stats, error) {
	// A done context fails the call before the cache can answer it, as it
	// does before any store call.
	if err := ctx.Err(); err != nil {
		return Decision{}, stats{}, err
	}
	// The clock is read before the key's lock is taken, to keep the lock
	// short; a caller that then finds a later time stored sees no refill,
	// as if its clock lagged.
	now := l.now()
	s := l.cache.get(key, l.prefix)
	// An exhausted key is denied from the last record seen: other writers
	// can only have taken tokens since, never added them, but for a Reset
	// or Refund, which is why the record must be recent (see cacheTrust).
	if s.have && !o.refund && s.trusted(now) {
		probe := s.st
		if d := decide(l.rules, &probe, now, o.cost, false); !d.Allowed {
			s.mu.Unlock()
			return d, stats{cached: true}, nil
		}
	}
	var d Decision
	var st stats
	var err error
	if !s.busy {
		s.busy = true
		s.mu.Unlock()
		d, st, err = l.lead(ctx, s, o, nil)
	} else {
		w := &waiter{op: o, ctx: ctx, done: make(chan struct{})}
		s.pending = append(s.pending, w)
		s.mu.Unlock()
		d, st, err = l.await(ctx, s, w)
	}
	l.cache.release(key, s)
	return d, st, err
}

// A waiter is a call that arrived while another call on the same key had
// a store call in flight.
type waiter struct {
	op
	ctx   context.Context // its caller's
	done  chan struct{}   // closed when d, st and err are set, or when leading
	state waiterState     // guarded by the slot's mu
	batch []*waiter       // when leading: the calls to decide with it
	left  bool            // abandoned before the flight's current attempt (the flight's own)
	d     Decision
	st    stats
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
func (l *Limiter) await(ctx context.Context, s *slot, w *waiter) (Decision, stats, error) {
	select {
	case <-w.done:
	case <-ctx.Done():
		s.mu.Lock()
		switch w.state {
		case queued:
			s.pending = slices.DeleteFunc(s.pending, func(x *waiter) bool { return x == w })
			w.state = abandoned
			s.mu.Unlock()
			return Decision{}, stats{}, ctx.Err()
		case batched:
			// Its cost may be counted by the flight in progress; the
			// caller is told the outcome is unknown.
			w.state = abandoned
			s.mu.Unlock()
			return Decision{}, stats{}, ctx.Err()
		}
		s.mu.Unlock()
		<-w.done // leading: the handover is done or about to be
	}
	if w.state == leading { // set before done was closed
		return l.lead(ctx, s, w.op, w.batch)
	}
	return w.d, w.st, w.err
}

// lead runs one flight for o and the batch handed to it, then hands the
// calls that queued meanwhile to the first of them. s.busy is set by the
// caller.
func (l *Limiter) lead(ctx context.Context, s *slot, o op, batch []*waiter) (Decision, stats, error) {
	s.mu.Lock()
	// Callers that left while the batch was handed over are not counted.
	batch = slices.DeleteFunc(batch, func(w *waiter) bool { return w.state == abandoned })
	for _, w := range s.pending {
		w.state = batched
		batch = append(batch, w)
	}
	s.pending = s.pending[:0]
	have, version, cur, gen := s.have, s.version, s.st, s.gen
	now := l.now()
	if have && now >= s.expires {
		have = false // the record has expired: a full bucket, absent
	}
	trusted := have && s.trusted(now)
	s.mu.Unlock()

	if len(batch) == 0 || ctx.Done() == nil {
		d, st, err, _ := l.fly(ctx, nil, s, o, batch, have, trusted, version, cur, gen)
		return d, st, err
	}
	// The calls batched with this one must not fail because its caller
	// leaves: the flight runs, in a goroutine of its own, under a context
	// that ends only once every caller in it has left, and this caller
	// stops waiting for it as soon as ctx ends. Its cost may then have
	// been counted, as for a batched caller that leaves.
	fctx, cancel := flightContext(ctx, batch)
	var d Decision
	var st stats
	var err error
	var mine bool // o was decided; if not, this caller had left first
	if left := pipeline.WaitOrLeave(ctx, func() {
		defer cancel()
		d, st, err, mine = l.fly(fctx, ctx, s, o, batch, have, trusted, version, cur, gen)
	}); left != nil {
		return Decision{}, stats{}, left
	}
	if !mine && err == nil {
		return Decision{}, st, ctx.Err() // left before it was decided: done
	}
	return d, st, err
}

// flightContext returns the context a flight for the caller of ctx and
// the callers in batch runs under: ctx's values, the latest of their
// deadlines (none if one has none), and ended once every one of them has
// left (never, if one's context cannot end). Its cancel func must be
// called when the flight is over.
func flightContext(ctx context.Context, batch []*waiter) (context.Context, context.CancelFunc) {
	latest, all := ctx.Deadline()
	forever := false
	for _, w := range batch {
		if w.ctx.Done() == nil {
			forever = true
		}
		if dl, ok := w.ctx.Deadline(); !ok {
			all = false
		} else if dl.After(latest) {
			latest = dl
		}
	}
	fctx := context.WithoutCancel(ctx)
	stopDeadline := func() {}
	if all {
		var c context.CancelFunc
		fctx, c = context.WithDeadline(fctx, latest)
		stopDeadline = c
	}
	fctx, cancel := context.WithCancel(fctx)
	if forever {
		return fctx, func() { cancel(); stopDeadline() }
	}
	// Every caller's leaving counts down; the count starts at one more,
	// taken off once all are registered, so that a context already done
	// cannot end the flight before the others are counted.
	var live atomic.Int64
	live.Store(int64(len(batch)) + 2)
	leave := func() {
		if live.Add(-1) == 0 {
			cancel()
		}
	}
	stops := make([]func() bool, 0, len(batch)+1)
	stops = append(stops, context.AfterFunc(ctx, leave))
	for _, w := range batch {
		stops = append(stops, context.AfterFunc(w.ctx, leave))
	}
	leave()
	return fctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
		stopDeadline()
	}
}

// fly runs one flight for o and the batch under ctx, then hands the calls
// that queued meanwhile to the first of them (see lead). own is the
// context of o's caller when it is not ctx (see flight).
func (l *Limiter) fly(ctx, own context.Context, s *slot, o op, batch []*waiter, have, trusted bool, version uint64, cur state, gen uint64) (Decision, stats, error, bool) {
	d, st, err, sent, mine := l.flight(ctx, own, s, o, batch, have, trusted, version, cur, gen)

	// A flight cut off by its context (every caller in it left, or the
	// latest deadline passed) must not fail a call still waiting. If no
	// write of theirs was sent, they go to the next leader; if one was,
	// its outcome is unknown, and they are told so.
	var retry []*waiter
	if err != nil && len(batch) > 0 && (ctx.Err() != nil || isContextErr(err)) {
		if !sent {
			retry = batch
		} else {
			unknown := fmt.Errorf("limiter: key %q: outcome unknown: the store call deciding this call with others was cut off (%v): %w", s.key, err, storage.ErrUnavailable)
			for _, w := range batch {
				w.d, w.err = Decision{}, unknown
			}
		}
	}
	if retry == nil {
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
	return d, st, err, mine
}

// flight decides o and its batch against the store: one compare-and-swap
// for all of them, retried from the returned record on conflict. It starts
// from the cached record cur when have is set; when that record is not
// trusted to deny (see cacheTrust) and every call would be denied, it reads
// the record first. It sets each batched waiter's d, st and err. On error,
// sent reports whether the failing step was a compare-and-swap, which may
// have landed.
//
// Callers that have left are not counted in the attempts that follow:
// batched waiters, and, when own is not nil (o's caller, whose flight runs
// under another context for the others), o itself. mine reports whether o
// was decided in the last attempt.
func (l *Limiter) flight(ctx, own context.Context, s *slot, o op, batch []*waiter, have, trusted bool, version uint64, cur state, gen uint64) (d Decision, st stats, err error, sent, mine bool) {
	for _, w := range batch {
		w.d, w.st, w.err = Decision{}, stats{}, nil // a batch handed over may carry an old failure
	}
	fail := func(err error, sent bool) (Decision, stats, error, bool, bool) {
		if sent {
			s.mu.Lock()
			if s.gen == gen {
				s.have = false // the write may have landed: read again next time
			}
			s.mu.Unlock()
		}
		for _, w := range batch {
			w.st, w.err = st, err
		}
		return Decision{}, st, err, sent, mine
	}
	read := false // cur was read from the store in this flight
	if l.timed != nil && !l.offsetKnown.Load() {
		// The first call on the store's clock reads it.
		st.calls++
		rec, err := l.get(ctx, s.key)
		if err == nil {
			cur, err = l.decode(s.key, rec, l.now())
		}
		if err != nil {
			return fail(err, false)
		}
		have, version = true, rec.Version
		trusted, read = true, true
	}
	if !have {
		// Assume absent: right for a new key at no cost, and a conflict
		// returns the record otherwise.
		version, cur = 0, fullState(l.rules, l.now())
	}
	for attempt := 1; ; attempt++ {
		now := l.now()
		next := cur
		d = Decision{}
		wrote := false
		if mine = own == nil || own.Err() == nil; mine {
			d, wrote = l.apply(&next, now, o)
		}
		if len(batch) > 0 {
			s.mu.Lock()
			for _, w := range batch {
				w.left = w.state == abandoned
			}
			s.mu.Unlock()
		}
		for _, w := range batch {
			if w.left {
				continue
			}
			var ww bool
			w.d, ww = l.apply(&next, now, w.op)
			wrote = wrote || ww
		}
		if !wrote {
			if !trusted {
				// A record seen too long ago does not deny: read it.
				st.calls++
				rec, err := l.get(ctx, s.key)
				if err == nil {
					var fresh state
					if fresh, err = l.decode(s.key, rec, l.now()); err == nil {
						cur, version, trusted, read = fresh, rec.Version, true, true
						attempt-- // a read, not a compare-and-swap
						continue
					}
				}
				// The read failed (or found a record it cannot decode): the
				// error is the caller's to handle, as any store error, never
				// a silent denial from a record too old to trust.
				return fail(err, false)
			}
			// All denied: nothing to write. What was read is remembered as
			// the store holds it, not refilled to now: after a clock that
			// steps back, that would be refill the store never recorded
			// (see decide).
			if read {
				s.mu.Lock()
				if s.gen == gen {
					s.remember(version, cur, now, deadline(now, retention(l.rules, &next, now)))
				}
				s.mu.Unlock()
			}
			for _, w := range batch {
				w.st = st
			}
			return d, st, nil, false, mine
		}
		s.buf = encodeStateV1(s.buf[:0], l.fp, l.rules, &next) // see formatV2
		st.calls++
		ttl := retention(l.rules, &next, now)
		// A store writes nothing for a context already done (see package
		// storage): a call whose context ended before it was made sent
		// nothing, and the calls batched with it can go to the next leader.
		live := ctx.Err() == nil
		rec, swapped, err := l.cas(ctx, s.key, version, s.buf, l.storeTTL(ttl))
		if err != nil {
			return fail(err, live)
		}
		if swapped {
			s.mu.Lock()
			if s.gen == gen {
				s.remember(rec.Version, next, now, deadline(now, ttl))
			}
			s.mu.Unlock()
			for _, w := range batch {
				w.st = st
			}
			return d, st, nil, false, mine
		}
		st.retries++
		if attempt == maxAttempts {
			return fail(fmt.Errorf("%w: key %q: %d compare-and-swaps lost", ErrContention, s.key, attempt), false)
		}
		// The first retries do not wait: each has the newest record, which
		// is its best chance. Later ones wait a random, growing time so
		// that colliding writers spread out, and then read the record
		// afresh: the one that came back is stale by then.
		if attempt >= immediateRetries {
			if err := backoff(ctx, attempt-immediateRetries); err != nil {
				return fail(err, false)
			}
			st.calls++
			if rec, err = l.get(ctx, s.key); err != nil {
				return fail(err, false)
			}
			now = l.now()
		}
		if cur, err = l.decode(s.key, rec, now); err != nil {
			return fail(err, false)
		}
		version, trusted, read = rec.Version, true, true
	}
}

// isContextErr reports whether err comes from a context ending.
func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// apply decides o on s at now, advancing s in place, and reports whether
// the state must be written.
func (l *Limiter) apply(s *state, now int64, o op) (Decision, bool) {
	if o.refund {
		refund(l.rules, s, now, o.cost)
		return Decision{}, true
	}
	d := decide(l.rules, s, now, o.cost, true)
	return d, d.Allowed
}

// local decides o on an in-process store, holding the key's record in
// the store: holds exclude each other, so there is no conflict to retry,
// no batching and no cache, and the decision allocates nothing.
func (l *Limiter) local(ctx context.Context, key string, o op, d *Decision) (stats, error) {
	var st state
	h, storeNow, now, err := l.hold(ctx, key, &st)
	if err != nil {
		return stats{calls: 1}, err
	}
	if o.refund {
		refund(l.rules, &st, now, o.cost)
		h.Commit(encodeState(h.Buffer(), l.fp, l.rules, &st), deadline(storeNow, l.storeTTL(retention(l.rules, &st, now))))
		return stats{calls: 1}, nil
	}
	// Only the change of state is made under the hold; the Decision is
	// described from the local copy after it ends.
	allowed := advance(l.rules, &st, now, o.cost, true)
	if allowed {
		h.Commit(encodeState(h.Buffer(), l.fp, l.rules, &st), deadline(storeNow, l.storeTTL(keep(l.rules, &l.tokenTimes, &st, now))))
	} else {
		h.Release()
	}
	describe(d, l.rules, &st, now, o.cost, allowed)
	return stats{calls: 1}, nil
}

// peekLocal is Peek's read on an in-process store.
func (l *Limiter) peekLocal(ctx context.Context, key string) (state, int64, error) {
	var st state
	h, _, now, err := l.hold(ctx, key, &st)
	if err != nil {
		return state{}, 0, err
	}
	h.Release()
	return st, now, nil
}

// hold holds key's record in the in-process store and decodes it into
// *st, which must be the zero state. It returns the hold, the store's time
// when the hold began, and the time to decide at: the store's, unless the
// limiter was given a clock. On error nothing is held.
func (l *Limiter) hold(ctx context.Context, key string, st *state) (h storage.Held, storeNow, now int64, err error) {
	if l.ownClock {
		now = l.now() // a clock of the caller's is not read under the store's lock
	}
	h, storeNow, err = l.inPlace.Hold(ctx, l.prefix, key)
	if err != nil {
		return nil, 0, 0, storeError(err, l.prefix+key)
	}
	if !l.ownClock {
		now = storeNow
	}
	if err := l.decodeInto(st, h.Record(), now); err != nil {
		h.Release()
		return nil, 0, 0, l.corrupt(l.prefix+key, err)
	}
	return h, storeNow, now, nil
}

// deadline is now+ttl, saturated.
func deadline(now int64, ttl time.Duration) int64 {
	if now > math.MaxInt64-int64(ttl) {
		return math.MaxInt64
	}
	return now + int64(ttl)
}
