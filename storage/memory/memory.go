package memory

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/sluice-go/sluice/storage"
)

const defaultSweepInterval = time.Second

// Option configures a Store built by New.
type Option func(*config)

type config struct {
	sweepEvery time.Duration
}

// WithShards used to set how many locked parts the key space was split
// into.
//
// Deprecated: each key now has its own lock and the index is read without
// one, so there are no shards to size. The option is accepted and ignored.
func WithShards(n int) Option {
	return func(*config) {}
}

// WithSweepInterval sets how often the janitor removes expired records.
// Expired records read as absent at once, however long before they are
// swept; the interval only bounds how long they occupy memory. Each sweep visits every record,
// so a very short interval, or a short one on a store of millions of
// keys, costs CPU. The default is one second; zero or a negative d means
// the default.
func WithSweepInterval(d time.Duration) Option {
	return func(c *config) { c.sweepEvery = d }
}

// Store is an in-process storage.Store: a concurrent map of records, each
// with its own lock, and expiry. Make one with New and release it with
// Close. It is safe for concurrent use.
type Store struct {
	t     *table
	start time.Time // monotonic base of every expiry
	jan   *janitor
}

// table is what the janitor shares with the Store: it must not reference
// the Store, so that a Store dropped without Close can be collected.
type table struct {
	idx *index
	// removed is the highest version of any entry taken out of idx: a new
	// entry starts above it, so a key's versions grow across Delete and
	// expiry.
	removed atomic.Uint64
	closed  atomic.Bool
	base    int64 // the store's start, Unix nanoseconds
}

var _ storage.InPlaceStore = (*Store)(nil)

// New returns an empty Store and starts its janitor, the goroutine that
// removes expired records; Close stops it.
func New(opts ...Option) *Store {
	c := config{}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	every := c.sweepEvery
	if every <= 0 {
		every = defaultSweepInterval
	}
	start := time.Now()
	s := &Store{
		t:     &table{idx: newIndex(), base: start.UnixNano()},
		start: start,
		jan:   &janitor{every: every, stop: make(chan struct{}), done: make(chan struct{})},
	}
	now := func() int64 { return int64(time.Since(start)) }
	go s.jan.run(s.t, now)
	// A Store dropped without Close must not keep its janitor (and with it
	// every record) alive forever.
	runtime.AddCleanup(s, (*janitor).halt, s.jan)
	return s
}

// now returns the time elapsed since the store was made, on the monotonic
// clock, so that wall clock steps neither expire records early nor keep
// them late.
func (s *Store) now() int64 {
	return int64(time.Since(s.start))
}

// find returns the entry of key, locked and in the map, or nil if there
// is none and create is false, or if t was closed before one could be
// created. A created entry holds no record.
func (t *table) find(key string, create bool) *entry {
	h := t.idx.hash(key)
	for {
		e := t.idx.lookup(h, key)
		if e == nil {
			if !create {
				return nil
			}
			if e = t.idx.insert(h, key, t); e == nil {
				return nil // closed
			}
		}
		e.mu.Lock()
		if e.dead {
			e.mu.Unlock() // removed meanwhile: look again
			continue
		}
		if !e.written {
			// An entry not written yet starts above every entry removed
			// before it was inserted: each one raised removed before
			// leaving the map, and so before this insert and this lock.
			// (Read at creation instead, removed could miss an entry of
			// the same key made, written and removed in between.)
			e.version = max(e.version, t.removed.Load())
		}
		return e
	}
}

// remove takes e, locked, out of the map.
func (t *table) remove(e *entry) {
	e.dead = true
	for {
		old := t.removed.Load()
		if e.version <= old || t.removed.CompareAndSwap(old, e.version) {
			break
		}
	}
	t.idx.remove(e)
}

// Get returns the record stored under key, or Version 0 if it is absent or
// expired. The returned Value is the store's own slice, shared with other
// callers: it must not be modified.
func (s *Store) Get(ctx context.Context, key string) (storage.Record, error) {
	if err := ctx.Err(); err != nil {
		return storage.Record{}, err
	}
	if s.t.closed.Load() {
		return storage.Record{}, errClosed("get", key)
	}
	now := s.now()
	e := s.t.find(key, false)
	if e == nil {
		return storage.Record{}, nil
	}
	defer e.mu.Unlock()
	if e.expires <= now {
		return storage.Record{}, nil
	}
	return storage.Record{Value: e.handOut(), Version: e.version}, nil
}

// CompareAndSwap stores a copy of value under key, to expire after ttl, iff
// the current version is expected (0: absent or expired). It returns the
// record stored afterwards; on conflict that is the current one (Version 0
// if absent), whose Value must not be modified. value is not retained.
func (s *Store) CompareAndSwap(ctx context.Context, key string, expected uint64, value []byte, ttl time.Duration) (storage.Record, bool, error) {
	if err := ctx.Err(); err != nil {
		return storage.Record{}, false, err
	}
	if s.t.closed.Load() {
		return storage.Record{}, false, errClosed("cas", key)
	}
	now := s.now()
	e := s.t.find(key, expected == 0)
	switch {
	case e == nil && expected == 0:
		return storage.Record{}, false, errClosed("cas", key) // Close began meanwhile
	case e == nil:
		return storage.Record{}, false, nil // absent, and a version was expected
	}
	defer e.mu.Unlock()
	switch live := e.expires > now; {
	case !live && expected != 0:
		return storage.Record{}, false, nil // absent
	case live && e.version != expected:
		return storage.Record{Value: e.handOut(), Version: e.version}, false, nil
	}
	stored := e.setCopy(value)
	e.version++
	e.expires, e.written = expiry(now, ttl), true
	return storage.Record{Value: stored, Version: e.version}, true, nil
}

// Hold locks the record of key prefix+key and returns it held, with the
// store's clock read when the hold began (see storage.InPlaceStore): the
// wall clock when the store was made, advanced by the monotonic clock
// since, the clock records expire by. The limiter decides under this
// hold: one lookup that takes no lock but the key's own, and no
// allocation once the key exists (while prefix+key takes up to 128
// bytes).
func (s *Store) Hold(ctx context.Context, prefix, key string) (storage.Held, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	if s.t.closed.Load() {
		return nil, 0, errClosed("hold", prefix+key)
	}
	// The whole key is built on the stack when it fits; find copies it
	// only to insert it.
	var small [holdKeySize]byte
	var full string
	if len(prefix)+len(key) <= len(small) {
		k := append(append(small[:0], prefix...), key...)
		full = unsafe.String(unsafe.SliceData(k), len(k))
	} else {
		full = prefix + key
	}
	// The clock is read before the lock, to keep the lock short. A holder
	// that then finds a later time stored sees no refill, as if its clock
	// lagged; a record that expires meanwhile is still held live. It is
	// read after the key is built: hashing the key reads it back in wider
	// words than it was written in, which stalls the CPU while the writes
	// are still in flight, and the clock's read gives them time to land.
	now := s.now()
	e := s.t.find(full, true)
	if e == nil {
		return nil, 0, errClosed("hold", prefix+key) // Close began meanwhile
	}
	e.live = e.expires > now
	return e, s.t.base + now, nil
}

// holdKeySize is the longest key Hold builds on the stack.
const holdKeySize = 128

// since converts a time of the store's clock (Unix nanoseconds) to the
// monotonic clock of expiries.
func (t *table) since(unix int64) int64 {
	switch {
	case t.base > 0 && unix < math.MinInt64+t.base:
		return math.MinInt64
	case t.base < 0 && unix > math.MaxInt64+t.base:
		return math.MaxInt64 // a clock set before 1970
	}
	return unix - t.base
}

// expiry is the time ttl after now, saturated.
func expiry(now int64, ttl time.Duration) int64 {
	expires := now + int64(ttl)
	if ttl > 0 && expires < now {
		expires = math.MaxInt64
	}
	return expires
}

// Delete removes key; an absent key is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.t.closed.Load() {
		return errClosed("delete", key)
	}
	if e := s.t.find(key, false); e != nil {
		s.t.remove(e)
		e.mu.Unlock()
	}
	return nil
}

// Len returns the number of records held, including expired ones the
// janitor has not removed yet (and, for an instant, keys held by Hold
// that were never written). It is meant for monitoring and tests.
func (s *Store) Len() int {
	return s.t.idx.len()
}

// Close stops the janitor, waits for it to return and drops every record.
// Later calls of Get, CompareAndSwap, Hold and Delete return an error
// wrapping storage.ErrClosed. A call in flight when Close begins either
// returns that error or completes, and what it wrote is dropped with the
// rest. Close is idempotent and always returns nil.
func (s *Store) Close() error {
	s.t.closed.Store(true)
	s.jan.halt()
	<-s.jan.done
	s.t.idx.clear()
	return nil
}

func errClosed(op, key string) error {
	return fmt.Errorf("memory: %s %q: %w", op, key, storage.ErrClosed)
}
