// Package bolt is a storage.Store kept in one bbolt file
// (go.etcd.io/bbolt): the backend for a single process that must keep its
// limits across restarts without running a server.
//
//	s, err := bolt.Open("/var/lib/myapp/limits.db")
//	if err != nil { ... }
//	defer s.Close()
//	lim, err := limiter.New(s, []limiter.Bucket{{Capacity: 5, Period: 10 * time.Second}})
//
// Open creates or opens the file and closes it on Close; New takes a
// *bbolt.DB the caller opened and never closes it. Records live in one
// top-level bucket, "sluice" unless WithBucket says otherwise.
//
// # Sharing and restarts
//
// Limits are not shared across processes: bbolt locks the file for one
// process at a time. A second process that opens it waits for the open
// timeout (WithOpenTimeout, 3 seconds by default, never forever) and then
// fails with ErrLocked. Within the process, any number of goroutines and
// limiters may share one Store, and several Stores may share one
// *bbolt.DB through New.
//
// Limits survive restarts and crashes of the process: CompareAndSwap
// returns only after its write transaction has been committed and synced to
// disk, so a token the limiter granted is still taken after the process is
// killed. WithNoSync skips the sync: much faster, but the last writes
// before a power loss or an operating-system crash may be lost, and the
// tokens they took granted again.
//
// # Writes and transactions
//
// CompareAndSwap and Delete commit in shared write transactions (group
// commit). A write that finds no transaction of writes running starts one
// at once, in the caller's goroutine, as db.Update would: a lone caller
// never waits for company, unlike with bbolt's DB.Batch, which waits up to
// 10 ms. Writes that arrive while it runs queue and go together in the
// next transaction, at most 1024 per transaction, so concurrent writers
// share one fsync. Each write is applied exactly once. Get reads in a
// read-only transaction, which does not wait for writers (except while
// bbolt grows the file's memory map).
//
// # On-disk layout, versions and expiry
//
// Each record is stored under its key as a format byte, the version (8
// bytes, big-endian), the expiry in Unix nanoseconds (8 bytes) and the
// value. Versions come from the bucket's sequence (bbolt's NextSequence),
// which is shared by all keys of the bucket and persisted with the writes,
// so a key never sees a version again, also after Delete, expiry or a
// restart.
//
// To recognise its buckets, the package notes each one it creates in a
// top-level bucket of its own, "\x00sluice layouts", under the bucket's
// name. The records' bucket holds only records, so every key a caller may
// use is free, and a bucket of a few records stays small enough for bbolt
// to keep inside its parent's page, which saves a page per write. Earlier
// releases kept that marker inside the records' bucket (under "\x00sluice",
// later under a key longer than storage.MaxKeyLen); Open and New move it
// when they open such a file. Such a release then refuses the file while
// its bucket holds records (with an empty bucket it writes its marker
// again, which the next Open moves). A program that deletes a store's
// bucket by hand should delete its name from "\x00sluice layouts" too:
// otherwise a bucket of that name that someone else fills later is taken
// for this package's.
//
// A record whose expiry has passed reads as absent at once. A janitor
// goroutine removes expired records every minute (WithSweepInterval), in
// read transactions of at most 10,000 records and write transactions of at
// most 1,000 deletes, so writers never wait behind a long sweep. Close
// stops it. Expiry uses the system clock of the process.
//
// # Errors
//
// Open fails with an error wrapping ErrLocked when the file is locked,
// wrapping storage.ErrCorrupt when the file is not a bbolt database, when
// it is shorter than the pages its header counts (a copy cut short, or a
// first Open that ran out of disk: delete such a file, or restore a whole
// copy), when bbolt finds its pages damaged, or when the bucket holds data
// not written by this package or is marked with a layout this release does
// not know, and wrapping the operating system's error for a path it cannot
// create (fs.ErrNotExist for a missing directory). bbolt panics on some
// damaged pages: Open, the Store's calls and its janitor recover, and the
// call that met the page gets an error wrapping storage.ErrCorrupt, while
// the sound pages go on being served (a failed Open releases the file's
// lock at once). Not all damage can be caught: a database that keeps no
// freelist on disk (bbolt.Options.NoFreelistSync, in a db given to New or
// in the file's last writer) has bbolt walk every page in a goroutine of
// its own, where a damaged page ends the process, and a page reference
// damaged to point past the file makes bbolt read unmapped memory, which
// no recover catches. Restore such a file from a whole copy.
//
// Errors of the Store methods name the operation and the key, such as
// `bolt: cas "user:42": storage: unavailable: ...`, and wrap both a
// storage sentinel and bbolt's cause: storage.ErrUnavailable for a failed
// transaction (including a commit that failed, whose write may or may not
// be on disk), storage.ErrCorrupt for a stored value not in this package's
// layout (which is then never overwritten or deleted), storage.ErrClosed
// after Close. Context errors are returned as they are.
//
// # Concurrency
//
// A Store is safe for concurrent use. A context that is done before a call
// writes nothing. One that ends before the write is applied in a
// transaction returns ctx.Err() at once and writes nothing, also while its
// transaction waits for bbolt's writer lock (held by another user of a
// database given to New, or by a long commit); that transaction then skips
// the write, and Close waits for it to end. Once the write is applied, the
// call waits for the commit and reports its true outcome.
//
// # Caveats
//
// Keys are stored in plain text in the file: hash them if they identify
// people. The file grows to the largest number of live records it held
// and bbolt does not shrink it (bbolt's compact command does, offline).
// Expiry follows the system clock of the process: a clock set forward
// expires records early (the limiter then sees full buckets), a clock set
// back keeps them longer.
package bolt
