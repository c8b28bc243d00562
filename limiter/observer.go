package limiter

import "time"

// Observer receives what a Limiter does, for metrics and logs; see
// WithObserver. Its methods are called synchronously on the caller's
// goroutine, so they must be safe for concurrent use and quick.
type Observer interface {
	// OnDecision is called after each call of AllowN (and so Allow and
	// each try of Wait) and Peek that reached a decision, including a
	// decision of the fallback limiter.
	OnDecision(Event)
	// OnError is called for each call that failed in the store (or with
	// ErrContention, or because its context ended), before the fallback
	// limiter, if any, decides instead.
	OnError(Event)
}

// Event describes one call of a Limiter.
type Event struct {
	Method   string   // "AllowN", "Peek", "Refund" or "Reset"
	Key      string   // the key as the caller gave it
	Cost     int64    // the call's cost: n for AllowN and Refund, 0 for Peek and Reset
	Decision Decision // the real decision, before WithDryRun turns a denial into an allow
	Err      error    // the error, for OnError: the store's, ErrContention or the context's
	// Latency is the wall time the call took, store calls included.
	Latency time.Duration
	// StoreCalls is how many store calls were made to decide the call; in
	// a batch, every call shares the batch's store calls.
	StoreCalls int
	// Retries is how many compare-and-swaps were lost to other writers.
	Retries int
	// Cached reports a denial served from the last record seen, with no
	// store call.
	Cached bool
	// Fallback reports a decision of the fallback limiter.
	Fallback bool
	// DryRun is set on every event of a limiter made WithDryRun, and on a
	// decision of a fallback made WithDryRun that allowed a denial. When
	// Decision is a denial from AllowN, the caller was told it was
	// allowed; Peek returns its Decision unchanged.
	DryRun bool
}
