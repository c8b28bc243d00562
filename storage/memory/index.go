package memory

import (
	"hash/maphash"
	"math/bits"
	"strings"
	"sync"
	"sync/atomic"
)

// index maps keys to entries. A lookup takes no lock: it reads an
// open-addressed table of slots (linear probing), each written once: its
// hash and key, then its entry, atomically, which a removal replaces by a
// tombstone. A lookup compares the hash and key in the slot, so it reads
// the entry only when it has found it. Inserts and removals take mu, and
// replace the table by a copy when it fills up or empties out. So a
// lookup may read a table that is no longer current: it can find an entry
// removed since, which is why an entry carries dead and its finder checks
// it under the entry's lock, and it can miss one inserted since, which is
// why a miss is looked up again under mu before anything is inserted.
type index struct {
	seed maphash.Seed
	tab  atomic.Pointer[slots]
	n    atomic.Int64 // entries in the index

	mu   sync.Mutex
	used int // slots of tab not nil, entries and tombstones (guarded by mu)
}

// slots is one table of the index; its length is a power of two, and at
// least a quarter of it is empty, so every probe ends.
type slots []slot

// A slot holds an entry, or a tombstone, or nothing (e nil). hash and key
// are written before e, and never after.
type slot struct {
	e    atomic.Pointer[entry]
	hash uint64
	key  string
}

// tomb marks the slot of a removed entry: probes go on past it.
var tomb = new(entry)

// minSlots is the smallest table.
const minSlots = 16

func newIndex() *index {
	x := &index{seed: maphash.MakeSeed()}
	x.tab.Store(newSlots(minSlots))
	return x
}

func newSlots(n int) *slots {
	s := make(slots, n)
	return &s
}

// hash returns the hash of key in x.
func (x *index) hash(key string) uint64 {
	return maphash.String(x.seed, key)
}

// lookup returns the entry of key, whose hash is h, or nil.
func (x *index) lookup(h uint64, key string) *entry {
	return lookupIn(*x.tab.Load(), h, key)
}

func lookupIn(s slots, h uint64, key string) *entry {
	mask := uint64(len(s) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		sl := &s[i]
		e := sl.e.Load()
		if e == nil {
			return nil
		}
		if sl.hash == h && e != tomb && sl.key == key {
			return e
		}
	}
}

// insert returns the entry of key, whose hash is h, making a new one for t
// if there is none. Once t is closed it makes none and returns nil: Close
// clears the index under x.mu after marking t closed, so an entry made
// then would outlive Close, and calls that each made their own would not
// exclude each other.
func (x *index) insert(h uint64, key string, t *table) *entry {
	x.mu.Lock()
	defer x.mu.Unlock()
	s := *x.tab.Load()
	if e := lookupIn(s, h, key); e != nil {
		return e
	}
	if t.closed.Load() {
		return nil
	}
	// The key may point into the caller's buffer: the entry keeps a copy.
	e := &entry{table: t, key: strings.Clone(key)}
	live := int(x.n.Load())
	if 4*(x.used+1) > 3*len(s) {
		s = x.rebuild(s, live+1)
	}
	put(s, h, e)
	x.used++
	x.n.Add(1)
	return e
}

// put writes e, whose key hashes to h, to the first empty slot of its probe
// in s. Tombstones are not reused: a slot is written once.
func put(s slots, h uint64, e *entry) {
	mask := uint64(len(s) - 1)
	i := h & mask
	for s[i].e.Load() != nil {
		i = (i + 1) & mask
	}
	s[i].hash, s[i].key = h, e.key
	s[i].e.Store(e)
}

// remove takes e out of the index, if it is there.
func (x *index) remove(e *entry) {
	x.mu.Lock()
	defer x.mu.Unlock()
	s := *x.tab.Load()
	mask := uint64(len(s) - 1)
	for i := x.hash(e.key) & mask; ; i = (i + 1) & mask {
		switch s[i].e.Load() {
		case nil:
			return
		case e:
			s[i].e.Store(tomb)
			live := int(x.n.Add(-1))
			if len(s) > 64*minSlots && 8*live < len(s) {
				x.rebuild(s, live) // mostly empty: a smaller table
			}
			return
		}
	}
}

// rebuild publishes a copy of s, without its tombstones, sized for room
// entries at most half full, and returns it. x.mu is held.
func (x *index) rebuild(s slots, room int) slots {
	fresh := make(slots, max(minSlots, 1<<bits.Len(uint(2*max(room, 1)-1))))
	used := 0
	for i := range s {
		if e := s[i].e.Load(); e != nil && e != tomb {
			put(fresh, s[i].hash, e)
			used++
		}
	}
	x.used = used
	x.tab.Store(&fresh)
	return fresh
}

// each calls f with every entry in the index until f returns false. It
// takes no lock: entries inserted or removed meanwhile may be seen or not.
func (x *index) each(f func(*entry) bool) {
	s := *x.tab.Load()
	for i := range s {
		if e := s[i].e.Load(); e != nil && e != tomb && !f(e) {
			return
		}
	}
}

// clear removes every entry.
func (x *index) clear() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.tab.Store(newSlots(minSlots))
	x.used = 0
	x.n.Store(0)
}

// len returns the number of entries in the index.
func (x *index) len() int {
	return int(x.n.Load())
}
