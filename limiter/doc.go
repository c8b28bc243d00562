// Package limiter rate-limits calls by key with the token bucket, over any
// storage.Store: in memory, Redis, PostgreSQL or a bbolt file.
//
// # Model
//
// A Bucket{Capacity: C, Period: P} holds at most C tokens, starts full and
// refills continuously at C tokens per P, so an empty bucket is full again
// after P. A Limiter combines one or more buckets (say 5 per 10 seconds and
// 100 per hour) and keeps them per key: a user id, an IP address, an API
// key. A call with cost n is allowed iff every bucket of the key holds at
// least n tokens; then n is taken from every bucket; if denied, nothing is
// taken. This is golang.org/x/time/rate's limiter with limit C/P and burst
// C, per key, and shared by every process that uses the same store.
//
// The arithmetic is exact: integers, no float drift and no overflow within
// MaxCapacity and MaxPeriod. A client that asks as fast as it can from
// t=0 is admitted exactly C + floor(t*C/P) times by time t.
//
// # Which method to call
//
//   - Allow / AllowN decide now and never wait for tokens: most servers
//     want this, answering 429 with Decision.RetryAfter when denied.
//   - Wait blocks until a token is available, for jobs and clients that
//     should slow down rather than fail. It fails at once when its
//     context's deadline comes before the token would.
//   - Peek reports a key's state without taking anything; Reset fills a
//     key's buckets again (after a successful login, say); Refund gives
//     tokens back for work that was admitted but not done.
//
// ParseBuckets reads limits written as text ("5/10s, 100/h"), the form
// Bucket.String writes, for flags and configuration files.
//
// # Operating it
//
//   - WithObserver reports every decision (with its latency, store calls,
//     retries, and whether the cache served it) and every store error;
//     package otelobserver turns them into OpenTelemetry metrics.
//   - WithDryRun decides and reports as usual but allows every call, so a
//     new limit can be watched before it is enforced.
//   - WithFallback decides with a local limiter while the store fails.
//   - WithStoreClock decides on the store's clock (Redis, PostgreSQL), so
//     that processes with skewed clocks share one exact limit: each
//     limiter's time stays behind the store's, by about the delay of the
//     quickest reply it has had (from the store's clock read to the
//     reply's arrival, microseconds on a local network). A local clock
//     that runs fast, or a step of either clock smaller than the time
//     calls take to reach the store, can put it ahead by no more than
//     that time; a larger step is followed at the next reply (see
//     WithStoreClock). On
//     application clocks, two processes whose clocks are s apart can admit
//     up to s*C/P more calls per bucket than the limit, rounded up.
//
// # Decisions
//
// Decision describes the binding bucket, the one with the fewest whole
// tokens left (on a tie, the one that refills slowest): its Limit, its
// Remaining tokens and ResetAfter, the wait until it is full. RetryAfter is
// 0 when allowed, and when denied the real wait until every bucket can pay
// the same cost. Durations round up to the nanosecond, so a client that
// waits RetryAfter is never early.
//
// # Storage and speed
//
// All the buckets of one key live in one record, and one CompareAndSwap
// decides a call: the limiter reads the record (or reuses the one it saw
// last), computes the next state, and swaps it in, retrying from the
// record that came back when another process got there first. It
// remembers the last record of recently used keys (WithCacheSize), so a
// busy key costs one store call per allowed decision, and a key that
// cannot pay even after refilling is denied with no store call at all:
// other writers can only have taken tokens since, but for a Reset or a
// Refund. So the record that denies must have been seen in the store
// within the last second; an exhausted key costs each Limiter one read a
// second, however many calls it gets. If that read fails, the call fails
// with the store's error, as any call the store cannot serve: a store
// error never turns into a silent denial.
//
// Calls on one key that arrive while a store call for it is in flight
// wait for it and are then decided together, in arrival order, with one
// CompareAndSwap; each still gets its own exact Decision. So many
// goroutines on one hot key never conflict with each other: only other
// processes cause retries.
//
// A store in the same process (storage/memory, or any that implements
// storage.InPlaceStore) is used differently: the limiter holds the key's
// record under the store's own lock, decides and writes it back, so there
// is nothing to cache, batch or retry, and a decision allocates nothing.
// On the system clock, such a limiter decides on the store's clock (see
// storage/memory).
//
// # Errors
//
// New returns ErrNilStore, ErrInvalidBucket or ErrInvalidOption for a
// configuration that cannot work. Calls return ErrInvalidKey,
// ErrInvalidCost or ErrCostExceedsCapacity for input they refuse,
// ErrContention after losing too many compare-and-swaps to other
// processes, and the store's errors (matching storage.ErrUnavailable,
// storage.ErrCorrupt or storage.ErrClosed), which name the key: the
// drivers of this module name it in theirs, and the limiter in the bare
// errors of a driver that does not wrap its failures (in an error that
// matches none of these three). A context
// that is done before a call makes it return the context's error as it
// is. One that ends during the call makes it return an error that matches
// the context's (errors.Is); when the store reports the outcome as
// unknown, the error matches storage.ErrUnavailable too. Check for
// context.Canceled first to tell a caller that left from a store that
// failed, as package httplimit does. An error is never a disguised allow
// or deny: the caller decides what a failure means, and package httplimit
// offers fail-open and fail-closed.
//
// # Concurrency
//
// A Limiter is safe for concurrent use by any number of goroutines, and
// any number of processes may share one store.
//
// # Caveats
//
//   - Denials served from the cache report the Remaining and RetryAfter of
//     the last record seen; another process may since have taken more, so
//     they are upper and lower bounds respectively. A Reset or Refund
//     through another Limiter or in another process can go unseen by this
//     one for up to a second (the age of a record that still denies), or
//     until it calls Peek, which reads the store.
//   - A call whose context ends while its store call, or the one it is
//     batched in, is under way returns at once with an error matching the
//     context's (see Errors), and may still have been counted (if the
//     write was sent before it left). The calls batched with it are not
//     affected: a batch's store call goes on until every call in it has
//     left, or the latest of their deadlines has passed.
//   - Time comes from each process's clock. Processes whose clocks
//     disagree share a limit only as exactly as their clocks agree; time
//     going backwards refills nothing.
//   - Changing the buckets of a limiter named with WithName starts every
//     key afresh (full): its keys are stored under a 32-bit fingerprint
//     of the buckets, so old and new limits do not overwrite each other
//     (but for the one-in-2^32 chance that both lists share it; see
//     WithName).
//   - Keys reach the store in plain text: hash them if they identify
//     people.
package limiter
