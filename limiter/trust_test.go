package limiter_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluice-go/sluice/internal/faultstore"
	"github.com/sluice-go/sluice/limiter"
)

// cacheTrust is limiter's: how long a record seen in the store may deny
// calls without being read again.
const cacheTrust = time.Second

// mustAllow calls lim.Allow and fails the test unless the outcome is want
// and the store saw exactly calls calls (gets and compare-and-swaps).
func mustAllow(t *testing.T, lim *limiter.Limiter, fs *faultstore.Store, want bool, calls int64, what string) {
	t.Helper()
	fs.ResetCounts()
	d, err := lim.Allow(context.Background(), "k")
	if err != nil || d.Allowed != want {
		t.Fatalf("%s: Allow = %+v, %v; want Allowed %t", what, d, err, want)
	}
	if c := fs.Calls(); c.Get+c.CAS != calls {
		t.Fatalf("%s: %d gets and %d compare-and-swaps, want %d store calls", what, c.Get, c.CAS, calls)
	}
}

// TestResetElsewhereSeenWithinCacheTrust: a Reset or Refund through
// another Limiter (or process) fills the key in the store, which a
// limiter denying from its cached record does not see. It sees it once
// the record is cacheTrust old, instead of only when the cached state
// would refill on its own (an hour here).
func TestResetElsewhereSeenWithinCacheTrust(t *testing.T) {
	for _, tc := range []struct {
		name string
		fill func(*limiter.Limiter) error
	}{
		{"Reset", func(l *limiter.Limiter) error { return l.Reset(context.Background(), "k") }},
		{"Refund", func(l *limiter.Limiter) error { return l.Refund(context.Background(), "k", 1) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buckets := []limiter.Bucket{{Capacity: 1, Period: time.Hour}}
			lim, fs, clock := faulty(t, buckets)
			other, err := limiter.New(fs, buckets, limiter.WithClock(clock))
			if err != nil {
				t.Fatal(err)
			}
			mustAllow(t, lim, fs, true, 1, "first call")
			mustAllow(t, lim, fs, false, 0, "exhausted, from the cache")
			if err := tc.fill(other); err != nil {
				t.Fatal(err)
			}
			clock.Advance(cacheTrust - time.Nanosecond)
			mustAllow(t, lim, fs, false, 0, "a record younger than cacheTrust still denies")
			clock.Advance(time.Nanosecond)
			mustAllow(t, lim, fs, true, 2, "a record cacheTrust old is read again (get, then swap)")
			mustAllow(t, lim, fs, false, 0, "exhausted again, from the cache")
		})
	}
}

// TestExhaustedKeyReadOncePerCacheTrust: an exhausted key that nobody
// refills costs one read per cacheTrust, and the record read denies the
// calls after it.
func TestExhaustedKeyReadOncePerCacheTrust(t *testing.T) {
	lim, fs, clock := faulty(t, []limiter.Bucket{{Capacity: 1, Period: time.Hour}})
	mustAllow(t, lim, fs, true, 1, "first call")
	mustAllow(t, lim, fs, false, 0, "at once")
	for range 3 {
		clock.Advance(cacheTrust - time.Nanosecond)
		mustAllow(t, lim, fs, false, 0, "just under cacheTrust after the record was seen")
		clock.Advance(time.Nanosecond)
		mustAllow(t, lim, fs, false, 1, "cacheTrust after the record was seen: one read")
		mustAllow(t, lim, fs, false, 0, "the record read denies")
	}
}

// TestPeekRefreshesCache: Peek reads the store, and the limiter's next
// call agrees with what it read, also after another limiter's Reset
// (which leaves no record) or Refund (a newer one).
func TestPeekRefreshesCache(t *testing.T) {
	for _, tc := range []struct {
		name string
		fill func(*limiter.Limiter) error
	}{
		{"Reset", func(l *limiter.Limiter) error { return l.Reset(context.Background(), "k") }},
		{"Refund", func(l *limiter.Limiter) error { return l.Refund(context.Background(), "k", 1) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buckets := []limiter.Bucket{{Capacity: 1, Period: time.Hour}}
			lim, fs, clock := faulty(t, buckets)
			other, err := limiter.New(fs, buckets, limiter.WithClock(clock))
			if err != nil {
				t.Fatal(err)
			}
			mustAllow(t, lim, fs, true, 1, "first call")
			mustAllow(t, lim, fs, false, 0, "exhausted, from the cache")
			if err := tc.fill(other); err != nil {
				t.Fatal(err)
			}
			p, err := lim.Peek(context.Background(), "k")
			if err != nil || !p.Allowed {
				t.Fatalf("Peek = %+v, %v; want Allowed", p, err)
			}
			mustAllow(t, lim, fs, true, 1, "after Peek saw the key filled")
		})
	}
}
