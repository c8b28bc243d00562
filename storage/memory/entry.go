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
// or CompareAndSwap) is never modified again. Only a hold, which hands
// nothing out, writes over an unshared value, and builds it in place:
// Buffer hands out memory of the entry's, and Commit keeps the value there.
//
// The first of its two cache lines holds everything a decision on a small
// record reads and writes: the lock, the record's fields and its value,
// inline. The key, which lookups compare, is also in the index's slot.
type entry struct {
	mu sync.Mutex
	// dead marks an entry taken out of the map (Delete, the janitor):
	// whoever locks it then looks the key up again.
	dead    bool
	shared  bool // the current value was handed out
	written bool // by CompareAndSwap or Commit, ever
	// inlineGone marks inline memory that was handed out (with a value
	// kept there): it is never written again.
	inlineGone bool
	live       bool  // while held: the record had not expired when the hold began
	inl        bool  // the value is inline[:vlen], else value
	vlen       uint8 // the length of an inline value
	// version is the record's; the last removed entry's when none was
	// written yet.
	version uint64
	expires int64 // on the store's monotonic clock; 0 (past) when no record
	inline  [inlineSize]byte

	value []byte // a value that is not inline
	table *table
	key   string
	_     [entrySize - 112]byte // up to the size class that keeps lines whole
}

// entrySize is the size of an entry on 64-bit platforms: two cache lines,
// and a size class whose objects start on a cache line. (On 32-bit ones,
// where pointers and slices are smaller, an entry takes 104 bytes.)
const entrySize = 128

// inlineSize is the largest value kept inside its entry: a one-bucket
// limiter record (29 bytes).
const inlineSize = 32

// val returns the current value, for the lock holder.
func (e *entry) val() []byte {
	if e.inl {
		return e.inline[:e.vlen:e.vlen]
	}
	return e.value[:len(e.value):len(e.value)] // appending to it copies
}

// handOut returns the current value to be handed out of the store: it is
// never written again.
func (e *entry) handOut() []byte {
	e.shared = true
	if e.inl {
		e.inlineGone = true
	}
	return e.val()
}

// setCopy stores a copy of v as the value, in memory of its own, and
// hands it out.
func (e *entry) setCopy(v []byte) []byte {
	e.setHeap(v)
	e.shared = true
	return e.value
}

// setHeap stores a copy of v as the value, in new memory of exactly its
// length.
func (e *entry) setHeap(v []byte) {
	e.value = make([]byte, len(v))
	copy(e.value, v)
	e.inl = false
}

// Record, Buffer, Commit and Release make a held entry a storage.Held
// (see Store.Hold).

// Record returns the held record, Version 0 if absent or expired.
func (e *entry) Record() storage.Record {
	if !e.live {
		return storage.Record{}
	}
	return storage.Record{Value: e.val(), Version: e.version}
}

// Buffer returns an empty buffer owned by the entry: the memory of a
// value too long to be inline unless it was handed out, else its inline
// memory unless that was handed out, else nil (a value built then is
// copied by Commit, as any other).
func (e *entry) Buffer() []byte {
	switch {
	case !e.inl && !e.shared && cap(e.value) > inlineSize:
		return e.value[:0] // a value too long to be inline, built in place
	case !e.inlineGone:
		return e.inline[:0]
	case !e.inl && !e.shared:
		return e.value[:0]
	}
	return nil
}

// Commit stores value for the held key, to expire at expires (Unix
// nanoseconds, on the clock of Hold's now), and unlocks the entry. A value
// built in place (see Buffer) is kept where it is; any other is copied,
// into memory that was never handed out.
func (e *entry) Commit(value []byte, expires int64) uint64 {
	switch {
	case !e.inlineGone && len(value) <= inlineSize:
		if !sameStart(value, e.inline[:]) {
			copy(e.inline[:], value)
		}
		e.inl, e.vlen = true, uint8(len(value))
	case !e.inl && !e.shared && sameStart(value, e.value):
		e.value = value
	case !e.inl && !e.shared && cap(e.value) >= len(value):
		e.value = e.value[:len(value)]
		copy(e.value, value)
	default:
		e.setHeap(value)
	}
	e.version++
	e.expires = e.table.since(expires)
	e.shared, e.written = false, true
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
