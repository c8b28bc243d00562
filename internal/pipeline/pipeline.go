// Package pipeline sends a driver's calls to its server: each call alone
// while few round trips are in flight, and otherwise queued and sent
// together, in one round trip, as soon as a round trip ends. It knows
// nothing of the calls: the driver says how to send one and how to send
// several, and each call carries its own outcome.
package pipeline

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Pipeliner sends calls of type C. Make one with New; it is safe for
// concurrent use.
type Pipeliner[C any] struct {
	maxInFlight int
	maxBatch    int
	one         func(ctx context.Context, c C)
	many        func(ctx context.Context, cs []C)
	leave       bool // a caller whose call went out at once leaves when its ctx ends

	mu       sync.Mutex
	inFlight int           // round trips under way, at most maxInFlight
	queue    []*waiting[C] // calls waiting for the next round trip
}

// waiting is a queued call.
type waiting[C any] struct {
	call    C
	ctx     context.Context
	done    chan struct{} // closed once the call ran or was dropped
	dropped bool          // its ctx ended before it was sent: nothing sent
}

// New returns a Pipeliner that keeps at most maxInFlight round trips under
// way (at least 1) and sends at most maxBatch calls (at least 1) in one.
// one sends a call alone and many several together, in a slice of its
// own; when they return, each call holds its outcome, an error included. The context they get
// is the caller's for a call sent at once; for calls that were queued
// (one or several, sent together), it has the values of the first one's,
// no cancellation, and the latest deadline of theirs (none if one has
// none): a caller that gives up stops waiting for its own outcome only.
func New[C any](maxInFlight, maxBatch int, one func(ctx context.Context, c C), many func(ctx context.Context, cs []C)) *Pipeliner[C] {
	return &Pipeliner[C]{maxInFlight: max(maxInFlight, 1), maxBatch: max(maxBatch, 1), one: one, many: many}
}

// LeaveOnCancel makes a caller whose call went out at once stop waiting
// for it as soon as its context ends, as a queued caller does, for a
// client that goes on waiting for a reply after its context is cancelled
// (go-redis stops only at a deadline). The call then goes on in a
// goroutine of its own, holding its round trip's place until it returns.
// It returns p.
func (p *Pipeliner[C]) LeaveOnCancel() *Pipeliner[C] {
	p.leave = true
	return p
}

// Do sends c and returns nil when c holds its outcome, or ctx's error when
// ctx ended first: before c was sent (then nothing was), or after, when
// its outcome is unknown.
func (p *Pipeliner[C]) Do(ctx context.Context, c C) error {
	p.mu.Lock()
	if p.inFlight < p.maxInFlight {
		p.inFlight++
		p.mu.Unlock()
		if p.leave {
			return WaitOrLeave(ctx, func() {
				defer p.next()
				p.one(ctx, c)
			})
		}
		defer p.next() // also if one panics: the place must not be lost
		p.one(ctx, c)
		return nil
	}
	w := &waiting[C]{call: c, ctx: ctx, done: make(chan struct{})}
	p.queue = append(p.queue, w)
	p.mu.Unlock()

	select {
	case <-w.done:
		if w.dropped {
			return ctx.Err()
		}
		return nil
	case <-ctx.Done():
	}
	p.mu.Lock()
	if i := slices.Index(p.queue, w); i >= 0 {
		p.queue = slices.Delete(p.queue, i, i+1)
	}
	p.mu.Unlock()
	// If it was taken for a batch, it may be on its way; the batch still
	// gives c its outcome, which nobody reads.
	return ctx.Err()
}

// next ends a round trip: when calls are waiting, it sends them together
// in a new goroutine, which goes on while more come; otherwise it frees
// the round trip's place.
func (p *Pipeliner[C]) next() {
	p.mu.Lock()
	batch := p.take()
	p.mu.Unlock()
	if batch != nil {
		go p.run(batch)
	}
}

// take returns the calls to send next, or nil, and then the round trip's
// place is free. p.mu must be held.
func (p *Pipeliner[C]) take() []*waiting[C] {
	for len(p.queue) > 0 {
		n := min(len(p.queue), p.maxBatch)
		batch := make([]*waiting[C], 0, n)
		for _, w := range p.queue[:n] {
			if w.ctx.Err() != nil {
				w.dropped = true
				close(w.done)
				continue
			}
			batch = append(batch, w)
		}
		p.queue = append(p.queue[:0], p.queue[n:]...)
		if len(batch) > 0 {
			return batch
		}
	}
	p.inFlight--
	return nil
}

// run sends batch, then whatever queued meanwhile, until nothing waits.
func (p *Pipeliner[C]) run(batch []*waiting[C]) {
	for batch != nil {
		p.send(batch)
		p.mu.Lock()
		batch = p.take()
		p.mu.Unlock()
	}
}

// send sends batch in one round trip and lets each caller see its outcome.
func (p *Pipeliner[C]) send(batch []*waiting[C]) {
	ctx, cancel := batchContext(batch)
	defer func() {
		cancel()
		for _, w := range batch {
			close(w.done)
		}
	}()
	if len(batch) == 1 {
		p.one(ctx, batch[0].call)
		return
	}
	calls := make([]C, len(batch))
	for i, w := range batch {
		calls[i] = w.call
	}
	p.many(ctx, calls)
}

// batchContext returns the context of a round trip of batch: the values
// of the first call's context, no cancellation, and the latest deadline of
// the calls (none if one has none).
func batchContext[C any](batch []*waiting[C]) (context.Context, context.CancelFunc) {
	ctx := context.WithoutCancel(batch[0].ctx)
	var latest time.Time
	for _, w := range batch {
		dl, ok := w.ctx.Deadline()
		if !ok {
			return ctx, func() {}
		}
		if dl.After(latest) {
			latest = dl
		}
	}
	return context.WithDeadline(ctx, latest)
}

// Queued returns how many calls wait for the next round trip.
func (p *Pipeliner[C]) Queued() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue)
}

// WaitOrLeave runs f and returns nil once it has returned, or ctx's error
// as soon as ctx ends, if that is first; f then goes on in a goroutine of
// its own, and whatever it writes is the caller's to ignore. A context
// that can never end (context.Background) costs no goroutine.
func WaitOrLeave(ctx context.Context, f func()) error {
	if ctx.Done() == nil {
		f()
		return nil
	}
	done := make(chan struct{})
	var panicked any // f's panic, raised again in the caller if it waits
	go func() {
		defer close(done)
		defer func() { panicked = recover() }()
		f()
	}()
	select {
	case <-done:
	case <-ctx.Done():
		select {
		case <-done: // both ended: the outcome is there
		default:
			return ctx.Err()
		}
	}
	if panicked != nil {
		panic(panicked)
	}
	return nil
}
