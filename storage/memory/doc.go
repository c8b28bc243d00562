// Package memory is the in-process storage driver: a sharded map with
// expiry, for a limiter that runs in one process.
//
//	store := memory.New()
//	defer store.Close()
//	lim, err := limiter.New(store, []limiter.Bucket{{Capacity: 5, Period: 10 * time.Second}})
//
// Limits kept here are not shared across processes and do not survive a
// restart: every process starts with full buckets. Use the redis or
// postgres driver to share a limit between processes, and postgres or bolt
// to keep it across restarts.
//
// # Expiry
//
// Every record expires after the time to live of the CompareAndSwap that
// wrote it, measured on the monotonic clock, so changes of the wall clock
// neither expire records early nor keep them late. An expired record
// reads as absent at once, from Get and CompareAndSwap alike; its memory
// is reclaimed by the janitor, a goroutine that sweeps the store every
// second (see WithSweepInterval) a few hundred entries at a time, so that
// it never holds a lock for long. Go maps never give memory back, so the
// janitor also rebuilds a shard's map once it holds less than a quarter of
// its peak: a burst of a million keys touched once costs memory only until
// their time to live has passed. Close stops the janitor; a Store dropped
// without Close has its janitor stopped once the garbage collector finds
// it unreachable.
//
// # Versions
//
// Versions come from a counter per shard, and a key always lives in the
// same shard, so a key's versions grow with every write, also across
// Delete and expiry, as package storage requires; different keys may
// share a version.
//
// # Concurrency
//
// A Store is safe for concurrent use. Keys are spread over shards (64 by
// default, see WithShards) by a hash seeded per store, each with its own
// lock held only for a map lookup and store, so goroutines that use
// different keys rarely wait for each other. Get allocates nothing;
// CompareAndSwap allocates only the copy of the value it stores. The
// limiter does not compare-and-swap here: it holds the key's record under
// the shard's lock (Hold, storage.InPlaceStore), decides and commits, with
// one map lookup and one clock read, and no conflict to retry. A commit
// hands no value back, so it may overwrite the memory of the value it
// replaces: a warm key's decision allocates nothing.
//
// # Clock
//
// Expiry runs on the monotonic clock. A hold also reports the store's
// time (Held.Now) as the wall clock when the store was made advanced by
// the monotonic clock since; a limiter on the system clock decides on
// that time, so that every limiter on one store agrees and a wall clock
// step changes nothing.
//
// # Errors
//
// The only errors are the context's error, returned as it is when ctx is
// already done (nothing is written then), and, after Close, an error
// wrapping storage.ErrClosed that names the operation and the key.
//
// # Caveats
//
// Get and CompareAndSwap return the store's own value slice, shared with
// every other reader: callers must not modify Record.Value. The store
// never modifies a slice once it has handed it out (the next swap stores
// a new one), and it never keeps the slice a caller passes in.
package memory
