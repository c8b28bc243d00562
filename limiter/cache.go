package limiter

import (
	"hash/maphash"
	"sync"
	"time"
)

// slot is the limiter's memory of one key: the last record it saw, and the
// calls on that key waiting for the store call in flight.
type slot struct {
	key string // the key in the store: name + ":" + user key

	mu      sync.Mutex
	evicted bool // removed from the cache; look the key up again
	busy    bool // a leader's store call is in flight
	pending []*waiter
	gen     uint64 // bumped by Reset: results of older flights are not cached
	have    bool   // version and st hold the last record seen
	version uint64
	st      state
	expires int64 // the limiter's time when the record's time to live ends
	seen    int64 // the limiter's time when the store last showed this record

	buf []byte // encoding buffer, used only by the leader
}

// cacheTrust is how long a record seen in the store may deny calls
// without being read again. A denial from an older record would ignore
// a Reset or Refund made since through another Limiter or another
// process, which fill the key: for longer than a bucket's refill of one
// token, which for a login limit of a few an hour is many minutes. So an
// exhausted key costs at most one store call per cacheTrust, per key and
// Limiter, and a Reset or Refund anywhere is seen within it.
const cacheTrust = time.Second

// trusted reports whether the record s holds may deny a call at now
// without a store call: it was seen less than cacheTrust before now. A
// record seen after now (the clock went back) is read again, or it would
// deny for as long as the clock's step.
func (s *slot) trusted(now int64) bool {
	return now >= s.seen && durationBetween(s.seen, now) < cacheTrust
}

// remember caches the record of the given version, whose state is st as
// of now, to expire at expires. s.mu must be held.
func (s *slot) remember(version uint64, st state, now, expires int64) {
	s.have, s.version, s.st, s.expires, s.seen = true, version, st, expires, now
}

// idle reports whether s can be forgotten. s.mu must be held.
func (s *slot) idle() bool { return !s.busy && len(s.pending) == 0 }

const cacheShards = 64

// cache maps user keys to slots, with a bound on the slots kept.
type cache struct {
	seed     maphash.Seed
	perShard int
	shards   [cacheShards]cacheShard
}

type cacheShard struct {
	mu    sync.RWMutex
	slots map[string]*slot
	_     [40]byte // keep shards on separate cache lines
}

func newCache(size int) *cache {
	// size/cacheShards rounded up, without overflow for any size.
	c := &cache{seed: maphash.MakeSeed(), perShard: size/cacheShards + min(size%cacheShards, 1)}
	for i := range c.shards {
		c.shards[i].slots = make(map[string]*slot)
	}
	return c
}

func (c *cache) shard(key string) *cacheShard {
	return &c.shards[maphash.String(c.seed, key)%cacheShards]
}

// get returns the slot of key, creating it (with store key prefix+key) if
// needed. The slot is returned locked and not evicted.
func (c *cache) get(key, prefix string) *slot {
	return c.find(key, prefix, true)
}

// lookup returns the slot of key if it is cached, locked, or nil.
func (c *cache) lookup(key string) *slot {
	return c.find(key, "", false)
}

func (c *cache) find(key, prefix string, create bool) *slot {
	sh := c.shard(key)
	for {
		sh.mu.RLock()
		s := sh.slots[key]
		sh.mu.RUnlock()
		if s == nil {
			if !create {
				return nil
			}
			s = sh.insert(key, prefix, c.perShard)
		}
		s.mu.Lock()
		if !s.evicted {
			return s
		}
		s.mu.Unlock()
	}
}

func (sh *cacheShard) insert(key, prefix string, limit int) *slot {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s := sh.slots[key]; s != nil {
		return s
	}
	// Forget idle keys beyond the bound. Map order is random, so the
	// victims are too. Busy slots stay: their callers are using them.
	for k, v := range sh.slots {
		if len(sh.slots) < limit {
			break
		}
		if v.mu.TryLock() {
			if v.idle() {
				v.evicted = true
				delete(sh.slots, k)
			}
			v.mu.Unlock()
		}
	}
	s := &slot{key: prefix + key}
	sh.slots[key] = s
	return s
}

// release forgets s if the cache is over its bound and s is idle. s.mu
// must not be held.
func (c *cache) release(key string, s *slot) {
	if c.perShard > 0 {
		return
	}
	sh := c.shard(key)
	sh.mu.Lock()
	s.mu.Lock()
	if s.idle() && !s.evicted {
		s.evicted = true
		delete(sh.slots, key)
	}
	s.mu.Unlock()
	sh.mu.Unlock()
}
