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
