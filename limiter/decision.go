package limiter

import "time"

// Decision is the outcome of one call, and what a caller tells its client.
//
// Limit, Remaining and ResetAfter describe the binding bucket: the one
// with the fewest whole tokens left after the call (on a tie, the one that
// refills slowest). Durations are rounded up to the nanosecond.
type Decision struct {
	// Allowed reports whether the call was admitted (its cost taken from
	// every bucket).
	Allowed bool
	// Limit is the binding bucket's capacity.
	Limit int64
	// Remaining is the binding bucket's whole tokens left after the call.
	Remaining int64
	// RetryAfter is 0 when allowed; when denied, it is the wait until every
	// bucket holds enough tokens for the same cost.
	RetryAfter time.Duration
	// ResetAfter is the wait until the binding bucket is full again.
	ResetAfter time.Duration
	// DryRun is set when the limiter, made WithDryRun, allowed a call it
	// would have denied; the other fields then describe the denial, and
	// nothing was taken.
	DryRun bool
	// Fallback is set when the store failed and the limiter's fallback
	// (WithFallback) decided instead; the other fields then describe the
	// fallback's buckets (see Limiter.Fallback), not the limiter's.
	Fallback bool
}
