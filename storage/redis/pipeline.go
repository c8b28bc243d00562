package redis

import (
	"context"
	"slices"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// maxInFlight is how many round trips a Store keeps in flight at once
// before it holds further calls back to send them together. A call that
// finds fewer in flight goes out at once, alone, with no added wait.
//
// A few round trips in flight keep a server busy whose clients are
// mostly waiting on the network; beyond that, sending more calls at once
// costs the client and the server one write and one read per batch
// instead of per call, which is what matters once they are short of CPU.
// Measured on 2 cores with go-redis's default pool (bench/, 10,000 keys):
// 8 gave the best throughput over 16 and 64 goroutines; 2 was 20% slower
// at 16 goroutines, and 16 or more 10-35% slower at 64 (without batching
// at all: 35%).
const maxInFlight = 8

// maxBatch bounds the calls sent in one pipeline; more wait for the next.
const maxBatch = 512

// pipeliner sends the calls of a Store to the server: each alone while
// few round trips are in flight, and otherwise queued and sent together,
// as one pipeline (one write, one read), as soon as a round trip ends.
// Each call is still its own command on its own key, so a ClusterClient
// or a Ring routes each to its node, and each caller gets exactly its own
// reply or error.
type pipeliner struct {
	client goredis.UniversalClient

	mu       sync.Mutex
	inFlight int     // round trips under way, at most maxInFlight
	queue    []*call // calls waiting for the next round trip
}

// call is one command of a Store on its way to the server. Its arguments
// point into it, so that building the command allocates little.
type call struct {
	cmd      *goredis.StringCmd
	once     bool // the client must not send it a second time
	args     [8]any
	key      string   // the Redis key
	expected valueArg // casScript's ARGV[1], in version
	version  [8]byte
	value    valueArg // casScript's ARGV[2], the store's own copy
	ttl      int64    // casScript's ARGV[3]

	// Set while queued (under pipeliner.mu, then read-only).
	ctx     context.Context
	done    chan struct{} // closed once the call ran or was dropped
	dropped bool          // its ctx ended before it was sent: nothing sent
}

// valueArg passes bytes to go-redis by pointer, without boxing a slice.
type valueArg struct{ b []byte }

// MarshalBinary returns the bytes as they are.
func (v *valueArg) MarshalBinary() ([]byte, error) { return v.b, nil }

// cmder returns the command as the client should process it.
func (c *call) cmder() goredis.Cmder {
	if c.once {
		return onceCmd{c.cmd}
	}
	return c.cmd
}

// onceCmd is a command the client sends at most once: a compare-and-swap
// that may have landed must not run a second time, or its own write would
// come back as a conflict.
type onceCmd struct {
	*goredis.StringCmd
}

// NoRetry tells the client not to send the command again after a failure.
func (onceCmd) NoRetry() bool { return true }

// do runs c and returns nil when c.cmd holds its outcome (a reply or the
// client's error), or ctx's error when ctx ended first: before c was sent,
// or after, when its outcome is unknown.
func (p *pipeliner) do(ctx context.Context, c *call) error {
	p.mu.Lock()
	if p.inFlight < maxInFlight {
		p.inFlight++
		p.mu.Unlock()
		defer p.next() // also if a hook panics: the place must not be lost
		_ = p.client.Process(ctx, c.cmder())
		return nil
	}
	c.ctx = ctx
	c.done = make(chan struct{})
	p.queue = append(p.queue, c)
	p.mu.Unlock()

	select {
	case <-c.done:
		if c.dropped {
			return ctx.Err()
		}
		return nil
	case <-ctx.Done():
	}
	p.mu.Lock()
	if i := slices.Index(p.queue, c); i >= 0 {
		p.queue = slices.Delete(p.queue, i, i+1)
	}
	p.mu.Unlock()
	// If it was taken for a pipeline, it may be on its way; the pipeline
	// still delivers its outcome to c, which nobody reads.
	return ctx.Err()
}

// next ends a round trip: when calls are waiting, it sends them together
// in a new goroutine, which goes on while more come; otherwise it frees
// the round trip's place.
func (p *pipeliner) next() {
	p.mu.Lock()
	batch := p.take()
	p.mu.Unlock()
	if batch != nil {
		go p.run(batch)
	}
}

// take returns the calls to send next, or nil, and then the round trip's
// place is free. p.mu must be held.
func (p *pipeliner) take() []*call {
	for len(p.queue) > 0 {
		n := min(len(p.queue), maxBatch)
		batch := make([]*call, 0, n)
		for _, c := range p.queue[:n] {
			if c.ctx.Err() != nil {
				c.dropped = true
				close(c.done)
				continue
			}
			batch = append(batch, c)
		}
		p.queue = append(p.queue[:0], p.queue[n:]...)
		if len(batch) > 0 {
			return batch
		}
	}
	p.inFlight--
	return nil
}

// run sends batch as one pipeline, then whatever queued meanwhile, until
// nothing waits.
func (p *pipeliner) run(batch []*call) {
	for batch != nil {
		p.send(batch)
		p.mu.Lock()
		batch = p.take()
		p.mu.Unlock()
	}
}

// send sends batch as one pipeline and hands each call its outcome. The
// pipeline ends with the latest deadline of its calls, and no caller's
// cancellation cuts it short for the others: a caller that gives up stops
// waiting for its own reply only.
func (p *pipeliner) send(batch []*call) {
	ctx, cancel := batchContext(batch)
	if len(batch) == 1 {
		_ = p.client.Process(ctx, batch[0].cmder())
	} else {
		pipe := p.client.Pipeline()
		for _, c := range batch {
			_ = pipe.Process(ctx, c.cmder())
		}
		// Each command carries its own reply or error; when the
		// connection fails, the client gives every command without a
		// reply the error.
		_, _ = pipe.Exec(ctx)
	}
	cancel()
	for _, c := range batch {
		close(c.done)
	}
}

// batchContext returns the context of a pipeline of batch: the values of
// the first call's context, no cancellation, and the latest deadline of
// the calls (none if one has none).
func batchContext(batch []*call) (context.Context, context.CancelFunc) {
	ctx := context.WithoutCancel(batch[0].ctx)
	var latest time.Time
	for _, c := range batch {
		dl, ok := c.ctx.Deadline()
		if !ok {
			return ctx, func() {}
		}
		if dl.After(latest) {
			latest = dl
		}
	}
	return context.WithDeadline(ctx, latest)
}
