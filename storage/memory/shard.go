package memory

import (
	"sync"
	"time"

	"github.com/sluice-go/sluice/storage"
)

const (
	// sweepChunk is how many entries the janitor visits while it holds a
	// shard's lock; it then lets waiting callers in before it goes on.
	sweepChunk = 512

	// shrinkMin is the peak size below which a shard's map is never
	// rebuilt: small maps cost little whatever their history (a few
	// kilobytes per shard at most).
	shrinkMin = 256

	// shrinkFactor: a map is rebuilt once it holds fewer than
	// peak/shrinkFactor entries.
	shrinkFactor = 4
)

// entry is one stored record. A value that was handed out (by Get or
// CompareAndSwap) is never modified again: shared marks it, and the next
// swap stores a new slice. Only Commit, which hands nothing out,
// overwrites an unshared value.
type entry struct {
	value   []byte
	version uint64
	expires int64 // on the store's monotonic clock (see Store.now)
	shared  bool
	// inline holds a small value that Commit wrote, so that the entry and
	// its value share cache lines and one allocation.
	inline [inlineSize]byte
}

// inlineSize is the largest value kept inside its entry: a one-bucket
// limiter record (29 bytes), with room to spare.
const inlineSize = 40

// shard is one lock and the part of the key space that hashes to it.
type shard struct {
	mu sync.Mutex
	// m holds the shard's entries, expired ones included until the
	// janitor removes them; nil once the store is closed.
	m map[string]*entry
	// version is the last version handed out in this shard. A key always
	// lives in the same shard, so a per-shard counter gives every key
	// strictly growing versions, across Delete and expiry, without one
	// counter contended by every core.
	version uint64
	// peak is the largest len(m) since m was made.
	peak int
	// base is the store's start in Unix nanoseconds: Now adds it to the
	// monotonic time since then.
	base int64

	// The hold in progress (see Store.Hold), valid while mu is held by
	// its holder: the key, its entry (nil if absent) and the time the
	// hold began, on the store's monotonic clock.
	key  []byte
	held *entry
	now  int64
	// buf is the buffer Buffer hands to holders.
	buf []byte

	_ [128 - 104]byte // keep neighbouring shards' locks off one cache line pair
}

// Record, Now, Buffer, Commit and Release make a held shard a
// storage.Held (see Store.Hold).

// Record returns the held record, Version 0 if absent or expired.
func (sh *shard) Record() storage.Record {
	e := sh.held
	if e == nil || e.expires <= sh.now {
		return storage.Record{}
	}
	return storage.Record{Value: e.value, Version: e.version}
}

// Now returns the time the hold began, in Unix nanoseconds.
func (sh *shard) Now() int64 { return sh.base + sh.now }

// Buffer returns the shard's scratch buffer, empty.
func (sh *shard) Buffer() []byte {
	if sh.buf == nil {
		sh.buf = make([]byte, 0, holdBufferSize)
	}
	return sh.buf[:0]
}

// Commit stores a copy of value for the held key and releases the shard.
// The memory of the value it replaces is reused unless it was handed out.
func (sh *shard) Commit(value []byte, ttl time.Duration) uint64 {
	e := sh.held
	if e == nil {
		e = &entry{}
		sh.m[string(sh.key)] = e
		if n := len(sh.m); n > sh.peak {
			sh.peak = n
		}
	}
	switch {
	case !e.shared && cap(e.value) >= len(value):
		e.value = e.value[:len(value)]
	case e.value == nil && len(value) <= inlineSize:
		e.value = e.inline[:len(value):len(value)]
	default:
		e.value = make([]byte, len(value))
	}
	copy(e.value, value)
	sh.version++
	e.version, e.expires, e.shared = sh.version, expiry(sh.now, ttl), false
	v := e.version
	sh.held = nil
	sh.mu.Unlock()
	return v
}

// Release releases the shard without writing.
func (sh *shard) Release() {
	sh.held = nil
	sh.mu.Unlock()
}

// holdBufferSize is the capacity of the buffer handed to holders: more
// than the limiter's largest record.
const holdBufferSize = 256

// sweep removes the expired entries of the shard, a chunk at a time, then
// rebuilds the map if it has shrunk far below its peak. It reports false if
// stop closed during the sweep.
func (sh *shard) sweep(now func() int64, stop <-chan struct{}) bool {
	sh.mu.Lock()
	m := sh.m
	if m == nil {
		sh.mu.Unlock()
		return true
	}
	t := now()
	n := 0
	// Other goroutines may change m while the lock is released between
	// chunks; that is allowed during a range loop as long as every step
	// of the loop runs under the lock, which it does.
	for k, e := range m {
		if e.expires <= t {
			delete(m, k)
		}
		if n++; n == sweepChunk {
			sh.mu.Unlock()
			select {
			case <-stop:
				return false
			default:
			}
			sh.mu.Lock()
			t, n = now(), 0
		}
	}
	sh.shrink()
	sh.mu.Unlock()
	return true
}

// shrink replaces m by a map sized to its contents when it holds less than
// a quarter of its peak, since Go maps never give memory back. The copy is
// of at most peak/4 entries. sh.mu must be held.
func (sh *shard) shrink() {
	if sh.peak < shrinkMin || len(sh.m) >= sh.peak/shrinkFactor {
		return
	}
	m := make(map[string]*entry, len(sh.m))
	for k, e := range sh.m {
		m[k] = e
	}
	sh.m, sh.peak = m, len(m)
}

// len returns the number of entries, expired or not.
func (sh *shard) len() int {
	sh.mu.Lock()
	n := len(sh.m)
	sh.mu.Unlock()
	return n
}

// close drops the shard's entries; later calls see a nil map.
func (sh *shard) close() {
	sh.mu.Lock()
	sh.m = nil
	sh.mu.Unlock()
}

// janitor is the background sweeper of a Store. It references the shards,
// never the Store, so that a Store dropped without Close can still be
// collected (and its janitor stopped by a cleanup).
type janitor struct {
	every time.Duration
	once  sync.Once
	stop  chan struct{}
	done  chan struct{}
}

// run sweeps every shard each interval until halt.
func (j *janitor) run(shards []shard, now func() int64) {
	defer close(j.done)
	tick := time.NewTicker(j.every)
	defer tick.Stop()
	for {
		select {
		case <-j.stop:
			return
		case <-tick.C:
		}
		for i := range shards {
			if !shards[i].sweep(now, j.stop) {
				return
			}
		}
	}
}

// halt asks run to return; it is safe to call more than once.
func (j *janitor) halt() {
	j.once.Do(func() { close(j.stop) })
}
