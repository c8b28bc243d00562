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

// InPlaceStore is an optional interface for stores whose operations
// complete on the calling goroutine without I/O, such as the memory
// driver. The limiter then holds its per-key lock across the call instead
// of queueing callers behind a store call in flight, and decides without
// allocating.
type InPlaceStore interface {
	Store
	// CompareAndSwapInPlace is CompareAndSwap for a caller that does not
	// need the stored value back. On success it returns the new version
	// and a zero current Record; on conflict, the current record, as
	// CompareAndSwap does. Since a value written this way is never handed
	// out, the store may later overwrite its memory in place.
	CompareAndSwapInPlace(ctx context.Context, key string, expected uint64, value []byte, ttl time.Duration) (version uint64, current Record, swapped bool, err error)
}
