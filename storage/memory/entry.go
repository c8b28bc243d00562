package memory

import (
	"sync"
	"time"

	"github.com/sluice-go/sluice/storage"
)

// sweepChunk is how many entries the janitor visits between checks that
// it was not asked to stop.
const sweepChunk = 512

// entry is one key's record and lock. A value that was handed out (by Get
// or CompareAndSwap) is never modified again: shared marks it, and the
// next write stores a new slice. Only a hold, which hands nothing out,
// writes over an unshared value, and builds it in place: Buffer hands out
// memory of the entry's and Commit keeps the value there.
type entry struct {
	// The fields a decision writes come first, next to each other.
	mu sync.Mutex
	// dead marks an entry taken out of the map (Delete, the janitor):
	// whoever locks it then looks the key up again.
	dead    bool
	shared  bool
	written bool // by CompareAndSwap or Commit, ever
	// inlineGone marks inline memory that was handed out (as a shared
	// value): it is never written again.
	inlineGone bool
	// version is the record's; the last removed entry's when none was
	// written yet.
	version uint64
	expires int64 // on the store's monotonic clock; 0 (past) when no record
	// The time a hold began (see Store.Hold), on the monotonic clock.
	now   int64
	value []byte
	// inline holds a small value written by a hold, so that the entry and
	// its value share cache lines and one allocation.
	inline [inlineSize]byte

	// The key's hash, the key and the entry's table, read by lookups.
	hash  uint64
	key   string
	table *table
}

// entrySize is the size of an entry: two cache lines, and a size class
// whose objects start on a cache line. The first holds the lock and the
// record's fields, the second the inline value and what lookups compare.
const entrySize = 128

// inlineSize is the largest value kept inside its entry: a one-bucket
// limiter record (29 bytes).
const inlineSize = 32

// Record, Now, Buffer, Commit and Release make a held entry a
// storage.Held (see Store.Hold).

// Record returns the held record, Version 0 if absent or expired.
func (e *entry) Record() storage.Record {
	if e.expires <= e.now {
		return storage.Record{}
	}
	return storage.Record{Value: e.value, Version: e.version}
}

// Now returns the time the hold began, in Unix nanoseconds.
func (e *entry) Now() int64 { return e.table.base + e.now }

// Buffer returns an empty buffer owned by the entry: its inline memory
// unless that holds a value that was handed out, else the memory of its
// value unless that was handed out, else nil (a value built then is copied
// by Commit, as any other).
func (e *entry) Buffer() []byte {
	switch {
	case e.inlineFree():
		return e.inline[:0]
	case !e.shared:
		return e.value[:0]
	}
	return nil
}

// inlineFree reports whether the inline memory may be written: it was
// never handed out, or holds the current value, unshared.
func (e *entry) inlineFree() bool {
	return !e.inlineGone && !(e.shared && sameStart(e.value, e.inline[:]))
}

// Commit stores value for the held key and unlocks the entry. A value
// built in place (see Buffer) is kept where it is; any other is copied,
// into memory that was never handed out.
func (e *entry) Commit(value []byte, ttl time.Duration) uint64 {
	if e.shared && sameStart(e.value, e.inline[:]) {
		e.inlineGone = true // handed out with the value: never written again
	}
	switch {
	case !e.inlineGone && len(value) <= inlineSize && sameStart(value, e.inline[:]):
		e.value = value[:len(value):len(value)]
	case !e.shared && sameStart(value, e.value):
		e.value = value
	case !e.shared && cap(e.value) >= len(value):
		e.value = e.value[:len(value)]
		copy(e.value, value)
	case !e.inlineGone && len(value) <= inlineSize:
		e.value = e.inline[:len(value):len(value)]
		copy(e.value, value)
	default:
		e.value = make([]byte, len(value))
		copy(e.value, value)
	}
	e.version++
	e.expires, e.shared, e.written = expiry(e.now, ttl), false, true
	v := e.version
	e.mu.Unlock()
	return v
}

// sameStart reports whether a and b begin at the same byte of memory.
func sameStart(a, b []byte) bool {
	return cap(a) > 0 && cap(b) > 0 && &a[:1][0] == &b[:1][0]
}

// Release unlocks the entry without writing. An entry that Hold made for
// an absent key and nobody wrote leaves the map again: reading absent
// keys (Peek) must not fill the store.
func (e *entry) Release() {
	if !e.written {
		e.table.remove(e)
	}
	e.mu.Unlock()
}

// sweep removes the expired entries of t. It reports false if stop closed
// during the sweep.
func (t *table) sweep(now func() int64, stop <-chan struct{}) bool {
	n := 0
	stopped := false
	cut := now()
	t.idx.each(func(e *entry) bool {
		e.mu.Lock()
		if !e.dead && e.expires <= cut {
			t.remove(e)
		}
		e.mu.Unlock()
		if n++; n == sweepChunk {
			n, cut = 0, now()
			select {
			case <-stop:
				stopped = true
				return false
			default:
			}
		}
		return true
	})
	return !stopped
}

// janitor is the background sweeper of a Store. It references the table,
// never the Store, so that a Store dropped without Close can still be
// collected (and its janitor stopped by a cleanup).
type janitor struct {
	every time.Duration
	once  sync.Once
	stop  chan struct{}
	done  chan struct{}
}

// run sweeps the table each interval until halt.
func (j *janitor) run(t *table, now func() int64) {
	defer close(j.done)
	tick := time.NewTicker(j.every)
	defer tick.Stop()
	for {
		select {
		case <-j.stop:
			return
		case <-tick.C:
		}
		if !t.sweep(now, j.stop) {
			return
		}
	}
}

// halt asks run to return; it is safe to call more than once.
func (j *janitor) halt() {
	j.once.Do(func() { close(j.stop) })
}
