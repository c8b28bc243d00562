// Package faultstore wraps a storage.Store to make the unhappy paths of the
// limiter testable: failing calls, slow calls, writes from a competing
// process and writes whose reply is lost.
//
// A Store with no fault configured is transparent: every call goes to the
// wrapped store unchanged. Faults are set and cleared at any time, also
// while other goroutines use the store, and each injected fault is
// deterministic, so a test can say exactly how many conflicts or errors a
// call will meet.
//
// Each call runs these steps in order:
//
//  1. The call is counted (see Calls).
//  2. The hook, if any, runs (see Hook).
//  3. The latency, if any, is waited out; when ctx ends first the call
//     returns ctx.Err() and nothing else happens.
//  4. A closed Store returns an error wrapping storage.ErrClosed; then an
//     error set with FailAll, then one set with FailNext, is returned. In
//     these cases the wrapped store is not called, so nothing is written.
//  5. For CompareAndSwap only: a competing write (ConflictNext), then the
//     call itself, then a lost reply (AmbiguousNext).
//
// # Errors
//
// Errors given to FailAll and FailNext are returned unchanged, so a test
// can compare them with == or errors.Is. The Store's own errors (after
// Close, or a lost reply) name the operation and key and wrap
// storage.ErrClosed or storage.ErrUnavailable.
//
// # Concurrency
//
// A Store is safe for concurrent use. Counters are atomic; fault settings
// are read under a mutex once per call, so a call sees either the old or
// the new settings, never a mix.
package faultstore
