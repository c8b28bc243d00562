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
// next write stores a new slice. Only Commit, which hands nothing out,
// overwrites an unshared value.
type entry struct {
	mu sync.Mutex
	// dead marks an entry taken out of the map (Delete, the janitor):
	// whoever locks it then looks the key up again.
	dead    bool
	shared  bool
	written bool   // by CompareAndSwap or Commit, ever
	version uint64 // of the record; of the last removed entry when none was written yet
	expires int64  // on the store's monotonic clock; 0 (past) when no record
	value   []byte

	// The time a hold began (see Store.Hold), on the monotonic clock.
	now int64
	// The entry's table and its key there.
	table *table
	key   string
	// buf is the buffer Buffer hands to holders, made on first use.
	buf []byte
	// inline holds a small value that Commit wrote, so that the entry and
	// its value share cache lines and one allocation.
	inline [inlineSize]byte
}

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

// Buffer returns an empty buffer owned by the entry.
func (e *entry) Buffer() []byte {
	if e.buf == nil {
		e.buf = make([]byte, 0, 64)
	}
	return e.buf[:0]
}

// Commit stores a copy of value for the held key and unlocks the entry.
// The memory of the value it replaces is reused unless it was handed out.
func (e *entry) Commit(value []byte, ttl time.Duration) uint64 {
	switch {
	case !e.shared && cap(e.value) >= len(value):
		e.value = e.value[:len(value)]
	case e.value == nil && len(value) <= inlineSize:
		e.value = e.inline[:len(value):len(value)]
	default:
		e.value = make([]byte, len(value))
	}
	copy(e.value, value)
	if cap(e.buf) < len(value) {
		e.buf = make([]byte, 0, len(value)) // the next hold's buffer fits
	}
	e.version++
	e.expires, e.shared, e.written = expiry(e.now, ttl), false, true
	v := e.version
	e.mu.Unlock()
	return v
}

// Release unlocks the entry without writing. An entry that Hold made for
// an absent key and nobody wrote leaves the map again: reading absent
// keys (Peek) must not fill the store.
func (e *entry) Release() {
	if !e.written {
		e.table.remove(e.key, e)
	}
	e.mu.Unlock()
}

// sweep removes the expired entries of t. It reports false if stop closed
// during the sweep.
func (t *table) sweep(now func() int64, stop <-chan struct{}) bool {
	n := 0
	stopped := false
	cut := now()
	t.m.Range(func(k, v any) bool {
		e := v.(*entry)
		e.mu.Lock()
		if !e.dead && e.expires <= cut {
			t.remove(k.(string), e)
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
