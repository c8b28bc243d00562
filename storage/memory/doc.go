// Package memory is the in-process storage driver: a concurrent map of
// records with expiry, for a limiter that runs in one process.
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
// reads as absent at once, from Get, CompareAndSwap and Hold alike (each
// reads the clock before it waits for the record's lock, so a record that
// expires during that wait is still seen); its memory
// is reclaimed by the janitor, a goroutine that sweeps the store every
// second (see WithSweepInterval), locking one record at a time, so a burst
// of a million keys touched once costs memory only until their time to
// live has passed (about 250 bytes a key meanwhile). Close stops the
// janitor; a Store dropped without Close has its janitor stopped once the
// garbage collector finds it unreachable.
//
// # Versions
//
// Each record counts its own writes, and a key written again after its
// record was removed (Delete, or the janitor after expiry) starts above
// the highest version ever removed from the store, so a key's versions
// grow with every write, also across Delete and expiry, as package
// storage requires; different keys may share a version.
//
// # Concurrency
//
// A Store is safe for concurrent use. Records are found in a hash table
// that takes no lock to read (only inserts and removals take one), whose
// slots hold each key and its hash, and each record has its own lock,
// held only while it is read or written: goroutines that use different
// keys never wait for each other, and the cores they run on do not pass a
// shared lock around. Get allocates nothing; CompareAndSwap allocates only
// the copy of the value it stores. The limiter does not compare-and-swap
// here: it holds the key's record (Hold, storage.InPlaceStore), decides
// and commits, with one lookup and one clock read, and no conflict to
// retry. A commit hands no value back, so the value is built in place, in
// the same cache line as the record's lock and version: a warm key's
// decision allocates nothing and touches three cache lines (the slot, the
// key's bytes and the record).
//
// # Clock
//
// Expiry runs on the monotonic clock. Hold also returns the store's time:
// the wall clock when the store was made, advanced by the monotonic clock
// since. A limiter on the system clock decides on that time, so that
// every limiter on one store agrees and a wall clock step changes nothing.
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
