package storage

import (
	"context"
	"time"
)

// MaxKeyLen is the longest key, in bytes, that a Store must accept. The
// limiter never passes a longer one, so drivers need not check it.
const MaxKeyLen = 2048

// MaxValueLen is the longest value, in bytes, that a Store must accept. The
// limiter's own records are a few dozen bytes; the bound exists so that
// drivers can size their columns and buffers.
const MaxValueLen = 64 << 10

// Record is what a Store keeps under one key.
type Record struct {
	// Value is opaque to the store: the limiter writes it and reads it back
	// byte for byte. Callers must not modify a Value a store returned: a
	// driver may hand out its own copy.
	Value []byte

	// Version is 0 when the key is absent (or expired) and otherwise
	// identifies one successful write. The store chooses it: every
	// successful CompareAndSwap stores a version greater than any version
	// the key has had before, also across Delete and expiry, so a version
	// held by a client never comes to name a different record.
	Version uint64
}

// Store is the storage contract: a versioned key-value map with atomic
// compare-and-swap and expiry. The limiter is written against it once;
// each backend implements it. The package documentation says exactly what
// a driver must promise.
//
// The limiter guarantees every driver that keys are non-empty and at most
// MaxKeyLen bytes, values at most MaxValueLen bytes and ttl positive. It
// may reuse a value slice once the call returns: a driver stores a copy.
type Store interface {
	// Get returns the record stored under key. An absent or expired key is
	// not an error: it returns a Record with Version 0 and a nil Value.
	Get(ctx context.Context, key string) (Record, error)

	// CompareAndSwap writes value under key with the given time to live iff
	// the stored version equals expected (0: the key must be absent or
	// expired). It returns the record stored afterwards: the new one when
	// swapped, the current one on conflict (Version 0 if the key is absent),
	// so a retry needs no Get. A conflict is swapped == false with a nil
	// error, never an error. When the outcome is unknown (a timeout after
	// the request was sent) the driver returns an error wrapping
	// ErrUnavailable and never guesses.
	CompareAndSwap(ctx context.Context, key string, expected uint64, value []byte, ttl time.Duration) (rec Record, swapped bool, err error)

	// Delete removes key. Deleting an absent key is not an error.
	Delete(ctx context.Context, key string) error

	// Close releases what the store opened itself (connections, files,
	// background goroutines), never a client it was handed. Calls after
	// Close return an error wrapping ErrClosed. Close is idempotent.
	Close() error
}
