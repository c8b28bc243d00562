// Package storage defines the contract between the sluice limiter and its
// backends: a versioned key-value map with atomic compare-and-swap and
// expiry.
//
// The limiter reads a record, computes the next state with a pure function
// and writes it back with CompareAndSwap, retrying from the record that
// came back on conflict. It never needs anything else from a backend, so a
// driver for a new store is a few hundred lines, proved by the suites in
// package conformance.
//
// # What the limiter promises a driver
//
//   - Keys are non-empty strings of at most MaxKeyLen bytes; they may hold
//     any bytes, including NUL, spaces, colons, braces and invalid UTF-8.
//   - Values are at most MaxValueLen bytes, possibly empty. The limiter
//     may reuse a value slice it passed in once the call returns, so a
//     driver stores its own copy, never the caller's slice, and no Record
//     it returns shares that slice's memory.
//   - ttl is positive: at least one second beyond the time the limiter's
//     state needs to be remembered.
//   - ctx is non-nil.
//
// Drivers trust these inputs and do not validate them again.
//
// # What a driver promises the limiter
//
//   - Atomicity: CompareAndSwap compares and writes as one step, against
//     every other client of the same backend, in this process or another.
//   - Versions: 0 means absent. Every successful write stores a version
//     greater than any the key has had before, also after Delete or expiry
//     (a store-wide counter or a clock-derived value does this), so that
//     a cached version can never match a different record.
//   - Conflicts: CompareAndSwap returns swapped == false with the current
//     record (Version 0 and nil Value when absent) and a nil error.
//   - Expiry: a record whose time to live has passed reads as absent
//     everywhere (Get returns Version 0; CompareAndSwap with expected 0
//     succeeds) even before the driver reclaims its space, and the driver
//     does reclaim it, so the store never grows without bound.
//   - Values round-trip byte for byte, and an empty value stays
//     distinguishable from an absent record by its Version.
//   - Errors: a failure of the backend wraps ErrUnavailable and the
//     driver's native cause (two %w verbs) and names the driver, the
//     operation and the key. A write whose outcome is unknown is an error,
//     never a guess. A context that is already done writes nothing and
//     its error is returned as it is; one that ends during a call gives an
//     error that matches it (errors.Is(err, ctx.Err()) holds), which also
//     wraps ErrUnavailable when the outcome is unknown. After Close every
//     method returns an error wrapping ErrClosed.
//   - Close releases only what the driver opened itself.
//
// # Optional interfaces
//
// A driver may implement further interfaces declared in this package for
// fast paths that the limiter alone uses; the limiter keeps one algorithm
// whichever a driver offers.
package storage
