package limiter

import "time"

// CacheTrust is cacheTrust, for tests.
const CacheTrust = cacheTrust

// Pending returns how many calls wait on key for another call's store
// call, for tests.
func Pending(l *Limiter, key string) int {
	s := l.cache.lookup(key)
	if s == nil {
		return 0
	}
	defer s.mu.Unlock()
	return len(s.pending)
}

// CachedKeys returns how many keys l remembers, for tests.
func CachedKeys(l *Limiter) int {
	n := 0
	for i := range l.cache.shards {
		sh := &l.cache.shards[i]
		sh.mu.RLock()
		n += len(sh.slots)
		sh.mu.RUnlock()
	}
	return n
}

// LearnOffset is learnOffset, for tests of clock readings (a wall clock
// step during a call) that a manual clock cannot produce.
func LearnOffset(l *Limiter, low int64, rtt time.Duration) { l.learnOffset(low, rtt) }

// Offset returns the store clock's offset l decides with, and whether it
// knows one.
func Offset(l *Limiter) (int64, bool) { return l.offset.Load(), l.offsetKnown.Load() }
