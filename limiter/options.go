package limiter

import (
	"fmt"
	"strings"
	"time"

	"github.com/sluice-go/sluice/internal/typednil"
)

// Option configures a Limiter in New.
type Option func(*config)

type config struct {
	name       string
	nameSet    bool
	clock      Clock
	clockErr   error // WithClock was given something that is not a clock
	cacheSize  int
	storeClock bool
	observer   Observer
	dryRun     bool
	fallback   *Limiter
	fallbackOK bool // WithFallback was given
}

// MaxNameLen is the longest name WithName accepts, in bytes.
const MaxNameLen = 128

// WithName sets the namespace of the limiter's keys in the store. Two
// limiters with the same name and the same buckets share their counts for
// a key; different names keep them apart. The default namespace is derived
// from the buckets (for example "5/10s,100/1h"), so limiters with the same
// buckets share counts unless they are named. A name is 1 to MaxNameLen
// printable bytes without spaces or colons.
//
// A named limiter's keys are stored as name@F:key, where F is a 32-bit
// fingerprint of its buckets. Changing the buckets therefore starts every
// key afresh, and limiters that share a name but not their buckets (old
// and new processes in a rolling deploy) each enforce their own limit
// instead of overwriting each other's records; the old records expire by
// themselves. Two different bucket lists share a fingerprint with a
// chance of one in 2^32; limiters with such lists and one name would share
// records (a record whose levels the other's buckets cannot hold reads as
// storage.ErrCorrupt until it expires). Give limiters with other buckets
// other names where that chance is too much.
func WithName(name string) Option {
	return func(c *config) { c.name, c.nameSet = name, true }
}

// WithClock sets the clock the limiter reads and waits on. The default is
// the system clock (time.Now); tests pass a manual clock. clock is either a
// Clock, such as a manual test clock, or a func() time.Time, such as
// time.Now or a manual clock's Now method; anything else, or nil (also a
// nil pointer or func inside the interface), is an error
// (ErrInvalidOption).
//
// Stores still expire records on their own clocks, after the time to live
// the limiter asks for: the wait until every bucket is full, measured on
// this clock, plus a second, and with this option at least a minute. A
// clock that runs slower than the store's, such as a manual clock left
// standing, therefore finds a key's buckets full again once its record
// expires in real time: a minute (or the longest Period plus a second, if
// longer) after its last write. Tests that need a key to stay empty longer
// than that in real time should advance their clock.
func WithClock(clock any) Option {
	return func(c *config) {
		c.clock, c.clockErr = nil, nil
		switch k := clock.(type) {
		case nil:
		case Clock:
			if typednil.Is(k) {
				c.clockErr = fmt.Errorf("%w: WithClock: a nil %T", ErrInvalidOption, clock)
				return
			}
			c.clock = k
		case func() time.Time:
			if k != nil {
				c.clock = funcClock(k)
			}
		default:
			c.clockErr = fmt.Errorf("%w: WithClock: a %T is neither a limiter.Clock nor a func() time.Time", ErrInvalidOption, clock)
		}
	}
}

// WithCacheSize bounds how many keys the limiter remembers the last stored
// record of, so that a busy key costs one store call per decision and an
// exhausted key one read a second, however many calls it gets. (A
// limiter on an in-process store keeps no cache.) The bound is
// approximate: the cache has 64 shards of ceil(n/64) keys each, and keys
// with calls in progress are never forgotten. The default is 16384; 0 forgets every key as soon as its
// calls are done. Negative is an error.
func WithCacheSize(n int) Option {
	return func(c *config) { c.cacheSize = n }
}

// WithStoreClock makes the limiter decide on the store's clock rather
// than the application's, so that processes whose clocks disagree still
// share one exact limit. The store must implement storage.TimedStore (the
// Redis and PostgreSQL drivers do) or be in-process (storage.InPlaceStore,
// as the memory driver is); New fails otherwise. The limiter learns the
// offset between the two clocks from every reply, at no extra round trip
// except one read on its first call; the clock given with WithClock then
// only measures time between replies. A reply that comes back late does
// not set the limiter's time back (so a caller that waits a denial's
// RetryAfter is not denied for the store's latency). A reply that proves
// the limiter ahead of the store (its clock went back, as after a
// failover to a server whose clock is behind, or the local clock stepped
// forward) sets it back to behind the store at once; a change smaller
// than the time calls wait before the store reads its clock (a busy
// connection pool, a long pipeline) cannot be told from latency, and
// leaves the limiter ahead by that change until a quicker call shows it.
// A clock given with WithClock has no monotonic reading, so a step of it
// during a call is taken for latency too. On an in-process store it
// decides on the clock the store expires records by, and a clock given
// with WithClock is not read. The default is the application's clock.
func WithStoreClock() Option {
	return func(c *config) { c.storeClock = true }
}

// WithObserver sends every decision and every failed call (a store error,
// ErrContention, or a context that ended) to o, for metrics and logs. The
// default is no observer, which costs nothing. o must be safe for
// concurrent use and should return quickly. WithObserver(nil) means no
// observer; a nil pointer or func inside the interface is an error
// (ErrInvalidOption): it would panic on the first decision.
func WithObserver(o Observer) Option {
	return func(c *config) { c.observer = o }
}

// WithDryRun makes the limiter decide and report as usual but allow every
// call: a denial is returned as Allowed with DryRun set (and takes
// nothing), and observers see the real decision. Use it to watch a new
// limit before enforcing it. The default is to enforce.
func WithDryRun() Option {
	return func(c *config) { c.dryRun = true }
}

// WithFallback decides with local when the store fails, instead of
// returning the error: typically a limiter on the memory store with the
// same buckets, so that each process goes on limiting on its own during
// an outage. The store error still reaches the observer. The error of a
// caller's context that ended, and refused input, are returned as usual;
// a context error from the store while the caller's context is live (a
// driver's own timeout) is a store failure. A cost that this limiter's
// buckets accept but local's refuse (local's are smaller: a share of the
// limit, say) is not decided by local: the store's error is returned. The
// default is no fallback; a nil local, or one made WithFallback itself, is
// an error.
func WithFallback(local *Limiter) Option {
	return func(c *config) { c.fallback, c.fallbackOK = local, true }
}

func (c *config) validate() error {
	if c.fallbackOK && c.fallback == nil {
		return fmt.Errorf("%w: nil fallback limiter", ErrInvalidOption)
	}
	if c.fallback != nil && c.fallback.rules == nil {
		return fmt.Errorf("%w: a zero Limiter as the fallback; make it with New", ErrInvalidOption)
	}
	if c.fallback != nil && c.fallback.fallback != nil {
		// Its Decisions could not tell which of the two decided, and so
		// which buckets they describe.
		return fmt.Errorf("%w: the fallback limiter has a fallback of its own", ErrInvalidOption)
	}
	if c.clockErr != nil {
		return c.clockErr
	}
	if c.clock == nil {
		return fmt.Errorf("%w: nil clock", ErrInvalidOption)
	}
	if c.observer != nil && typednil.Is(c.observer) {
		return fmt.Errorf("%w: WithObserver: a nil %T", ErrInvalidOption, c.observer)
	}
	if c.cacheSize < 0 {
		return fmt.Errorf("%w: negative cache size %d", ErrInvalidOption, c.cacheSize)
	}
	if !c.nameSet {
		return nil
	}
	if c.name == "" || len(c.name) > MaxNameLen {
		return fmt.Errorf("%w: name must be 1 to %d bytes, got %d", ErrInvalidOption, MaxNameLen, len(c.name))
	}
	for i := 0; i < len(c.name); i++ {
		if ch := c.name[i]; ch <= ' ' || ch >= 0x7f || ch == ':' {
			return fmt.Errorf("%w: name %q: byte %d is not a printable character other than space and colon", ErrInvalidOption, c.name, i)
		}
	}
	return nil
}

// defaultName derives a limiter's name from its canonical buckets.
func defaultName(rules []Bucket) string {
	parts := make([]string, len(rules))
	for i, b := range rules {
		parts[i] = b.String()
	}
	return strings.Join(parts, ",")
}
