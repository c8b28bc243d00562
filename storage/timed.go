package storage

import (
	"context"
	"time"
)

// TimedStore is an optional interface for drivers that can read their
// backend's clock in the same round trip as each operation (Redis TIME
// inside the script, PostgreSQL clock_timestamp() in the statement). With
// limiter.WithStoreClock the limiter decides on that clock instead of the
// application's, learning the offset from each reply, so that processes
// with skewed clocks still share one exact limit.
//
// Each method behaves exactly as its Store counterpart and also returns
// the backend's time at which the operation ran; on error the time is the
// zero Time. Drivers return times from one clock for all their replies.
type TimedStore interface {
	Store
	// GetTimed is Get, plus the backend's time.
	GetTimed(ctx context.Context, key string) (Record, time.Time, error)
	// CompareAndSwapTimed is CompareAndSwap, plus the backend's time.
	CompareAndSwapTimed(ctx context.Context, key string, expected uint64, value []byte, ttl time.Duration) (rec Record, swapped bool, now time.Time, err error)
}

// InPlaceStore is an optional interface for stores that keep their
// records in the calling process and never block on I/O, such as the
// memory driver. Instead of a compare-and-swap, the limiter holds the
// key's record, computes the next state and commits it, all under the
// store's own lock: one lookup, no conflicts, no allocation.
type InPlaceStore interface {
	Store
	// Hold locks the record stored under the key prefix+key (passed in
	// two parts so that the caller need not build the string) and
	// returns it held, with the store's clock read when the hold began,
	// in Unix nanoseconds: the clock the store expires records by. It
	// returns an error, with nothing held, if ctx is done or the store is
	// closed. The holder must end the hold with exactly one call of
	// Commit or Release, soon and without blocking in between: other
	// callers may wait on the same lock.
	Hold(ctx context.Context, prefix, key string) (h Held, now int64, err error)
}

// Held is a record locked by InPlaceStore.Hold. Its methods are valid only
// until the hold ends.
type Held interface {
	// Record returns the held record: Version 0 if the key is absent or
	// expired. Its Value must not be modified.
	Record() Record
	// Buffer returns an empty slice owned by the store, in which the
	// holder may build the value it commits. It may share memory with
	// the held record's Value, so that committing copies nothing: a
	// holder reads the record before it calls Buffer, and once it has
	// written into the buffer, it must end the hold with Commit.
	Buffer() []byte
	// Commit stores a copy of value under the key, to expire at expires
	// (Unix nanoseconds on the clock of Hold's now), with a new version,
	// which it returns, and ends the hold.
	Commit(value []byte, expires int64) uint64
	// Release ends the hold without writing.
	Release()
}
