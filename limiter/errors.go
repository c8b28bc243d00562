package limiter

import "errors"

// Errors returned by New for a configuration that cannot work.
var (
	// ErrNilStore is returned by New when the store is nil, and by the
	// methods of a zero Limiter, which has no store: make Limiters with
	// New.
	ErrNilStore = errors.New("limiter: nil store")
	// ErrInvalidBucket is returned by New when there are no buckets, more
	// than MaxBuckets, a bucket outside the bounds of Bucket, or the same
	// bucket twice.
	ErrInvalidBucket = errors.New("limiter: invalid bucket")
	// ErrInvalidOption is returned by New when an option's value cannot be
	// used, such as an empty name or a nil clock.
	ErrInvalidOption = errors.New("limiter: invalid option")
)

// Errors returned by a Limiter's methods for input they refuse. Nothing is
// read or written when they are returned.
var (
	// ErrInvalidKey is returned when a key is empty or longer than
	// MaxKeyLen bytes; any other bytes make a key.
	ErrInvalidKey = errors.New("limiter: invalid key")
	// ErrInvalidCost is returned when a cost is zero or negative.
	ErrInvalidCost = errors.New("limiter: cost must be positive")
	// ErrCostExceedsCapacity is returned when a cost is above the capacity
	// of a bucket: such a call could never be admitted.
	ErrCostExceedsCapacity = errors.New("limiter: cost exceeds capacity")
)

// ErrContention is returned when a call lost its compare-and-swap to other
// writers of the same key more times than the limiter retries. It happens
// only under heavy contention from other processes; nothing was taken.
var ErrContention = errors.New("limiter: too much contention")
