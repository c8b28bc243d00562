package memory

import (
	"context"
	"fmt"
	"hash/maphash"
	"math"
	"math/bits"
	"runtime"
	"time"

	"github.com/sluice-go/sluice/storage"
)

const (
	defaultShards        = 64
	maxShards            = 1 << 16
	defaultSweepInterval = time.Second
)

// Option configures a Store built by New.
type Option func(*config)

type config struct {
	shards     int
	sweepEvery time.Duration
}

// WithShards sets how many independently locked parts the key space is
// split into; more shards mean less contention between goroutines that
// use different keys. n is rounded up to a power of two and capped at
// 65536. The default is 64; zero or a negative n means the default.
func WithShards(n int) Option {
	return func(c *config) { c.shards = n }
}

// WithSweepInterval sets how often the janitor removes expired records.
// Expired records read as absent whenever they are swept; the interval
// only bounds how long they occupy memory. Each sweep visits every record,
// so a very short interval, or a short one on a store of millions of
// keys, costs CPU. The default is one second; zero or a negative d means
// the default.
func WithSweepInterval(d time.Duration) Option {
	return func(c *config) { c.sweepEvery = d }
}

// Store is an in-process storage.Store: a sharded map with expiry. Make one
// with New and release it with Close. It is safe for concurrent use.
type Store struct {
	shards []shard
	mask   uint64
	seed   maphash.Seed
	start  time.Time // monotonic base of every expiry
	jan    *janitor
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
	n := c.shards
	switch {
	case n <= 0:
		n = defaultShards
	case n > maxShards:
		n = maxShards
	default:
		n = 1 << bits.Len(uint(n-1))
	}
	every := c.sweepEvery
	if every <= 0 {
		every = defaultSweepInterval
	}

	s := &Store{
		shards: make([]shard, n),
		mask:   uint64(n - 1),
		seed:   maphash.MakeSeed(),
		start:  time.Now(),
		jan:    &janitor{every: every, stop: make(chan struct{}), done: make(chan struct{})},
	}
	for i := range s.shards {
		s.shards[i].m = make(map[string]*entry)
		s.shards[i].base = s.start.UnixNano()
	}
	start := s.start
	now := func() int64 { return int64(time.Since(start)) }
	go s.jan.run(s.shards, now)
	// A Store dropped without Close must not keep its janitor (and with it
	// every shard) alive forever.
	runtime.AddCleanup(s, (*janitor).halt, s.jan)
	return s
}

// now returns the time elapsed since the store was made, on the monotonic
// clock, so that wall clock steps neither expire records early nor keep
// them late.
func (s *Store) now() int64 {
	return int64(time.Since(s.start))
}

func (s *Store) shard(key string) *shard {
	return &s.shards[maphash.String(s.seed, key)&s.mask]
}

// Get returns the record stored under key, or Version 0 if it is absent or
// expired. The returned Value is the store's own slice, shared with other
// callers: it must not be modified.
func (s *Store) Get(ctx context.Context, key string) (storage.Record, error) {
	if err := ctx.Err(); err != nil {
		return storage.Record{}, err
	}
	sh := s.shard(key)
	sh.mu.Lock()
	if sh.m == nil {
		sh.mu.Unlock()
		return storage.Record{}, errClosed("get", key)
	}
	e := sh.m[key]
	// The clock is read only for a record found.
	if e == nil || e.expires <= s.now() {
		sh.mu.Unlock()
		return storage.Record{}, nil
	}
	e.shared = true
	rec := storage.Record{Value: e.value, Version: e.version}
	sh.mu.Unlock()
	return rec, nil
}

// CompareAndSwap stores a copy of value under key, to expire after ttl, iff
// the current version is expected (0: absent or expired). It returns the
// record stored afterwards; on conflict that is the current one (Version 0
// if absent), whose Value must not be modified. value is not retained.
func (s *Store) CompareAndSwap(ctx context.Context, key string, expected uint64, value []byte, ttl time.Duration) (storage.Record, bool, error) {
	version, cur, swapped, err := s.swap(ctx, key, expected, value, ttl)
	if !swapped || err != nil {
		return cur, false, err
	}
	return storage.Record{Value: cur.Value, Version: version}, true, nil
}

// Hold locks the shard of key prefix+key and returns it as the held
// record (see storage.InPlaceStore). The limiter decides under this hold:
// one map lookup, and no allocation once the key exists. Its Now is the
// store's clock: the wall clock when the store was made, advanced by the
// monotonic clock since, the clock records expire by.
func (s *Store) Hold(ctx context.Context, prefix, key string) (storage.Held, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// The clock is read before the lock, to keep the lock short. A holder
	// that then finds a later time stored sees no refill, as if its clock
	// lagged; a record that expires meanwhile is still held live.
	now := s.now()
	// The whole key is built on the stack when it fits, else in the
	// shard's buffer under its lock, and hashed as Get would hash it.
	var small [holdKeySize]byte
	var sh *shard
	if len(prefix)+len(key) <= len(small) {
		k := append(append(small[:0], prefix...), key...)
		sh = &s.shards[maphash.Bytes(s.seed, k)&s.mask]
		sh.mu.Lock()
		if sh.m != nil {
			if sh.held = sh.m[string(k)]; sh.held == nil {
				sh.key = append(sh.key[:0], k...) // for Commit to insert
			}
		}
	} else {
		var h maphash.Hash
		h.SetSeed(s.seed)
		h.WriteString(prefix)
		h.WriteString(key)
		sh = &s.shards[h.Sum64()&s.mask]
		sh.mu.Lock()
		if sh.m != nil {
			sh.key = append(append(sh.key[:0], prefix...), key...)
			sh.held = sh.m[string(sh.key)]
		}
	}
	if sh.m == nil {
		sh.mu.Unlock()
		return nil, errClosed("hold", prefix+key)
	}
	sh.now = now
	return sh, nil
}

// holdKeySize is the longest key Hold builds on the stack.
const holdKeySize = 128

// swap is the compare-and-swap. On success it returns the new version and
// the stored value in the record; on conflict, the current record.
func (s *Store) swap(ctx context.Context, key string, expected uint64, value []byte, ttl time.Duration) (uint64, storage.Record, bool, error) {
	if err := ctx.Err(); err != nil {
		return 0, storage.Record{}, false, err
	}
	sh := s.shard(key)
	now := s.now()
	expires := expiry(now, ttl)
	sh.mu.Lock()
	if sh.m == nil {
		sh.mu.Unlock()
		return 0, storage.Record{}, false, errClosed("cas", key)
	}
	e := sh.m[key]
	if e == nil || e.expires <= now {
		if expected != 0 {
			sh.mu.Unlock()
			return 0, storage.Record{}, false, nil
		}
	} else if e.version != expected {
		e.shared = true
		cur := storage.Record{Value: e.value, Version: e.version}
		sh.mu.Unlock()
		return 0, cur, false, nil
	}
	if e == nil {
		e = &entry{}
		sh.m[key] = e
		if n := len(sh.m); n > sh.peak {
			sh.peak = n
		}
	}
	e.value = make([]byte, len(value))
	copy(e.value, value)
	sh.version++
	e.version, e.expires, e.shared = sh.version, expires, true
	version, stored := e.version, storage.Record{Value: e.value}
	sh.mu.Unlock()
	return version, stored, true, nil
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
	sh := s.shard(key)
	sh.mu.Lock()
	if sh.m == nil {
		sh.mu.Unlock()
		return errClosed("delete", key)
	}
	delete(sh.m, key)
	sh.mu.Unlock()
	return nil
}

// Len returns the number of records held, including expired ones the
// janitor has not removed yet. It is meant for monitoring and tests: it
// locks every shard in turn, and the count may be stale by the time it
// returns.
func (s *Store) Len() int {
	n := 0
	for i := range s.shards {
		n += s.shards[i].len()
	}
	return n
}

// Close stops the janitor, waits for it to return and drops every record.
// Later calls of Get, CompareAndSwap and Delete return an error wrapping
// storage.ErrClosed. Close is idempotent and always returns nil.
func (s *Store) Close() error {
	s.jan.halt()
	<-s.jan.done
	for i := range s.shards {
		s.shards[i].close()
	}
	return nil
}

func errClosed(op, key string) error {
	return fmt.Errorf("memory: %s %q: %w", op, key, storage.ErrClosed)
}
