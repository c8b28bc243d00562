package limiter_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sluice-go/sluice/internal/fakeclock"
	"github.com/sluice-go/sluice/internal/faultstore"
	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/storage"
)

// cacheTrust is how long a record seen in the store may deny calls
// without being read again.
const cacheTrust = limiter.CacheTrust

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

// fills are the ways another limiter fills a key: a Reset leaves no
// record, a Refund a newer one.
var fills = []struct {
	name string
	fill func(*limiter.Limiter) error
}{
	{"Reset", func(l *limiter.Limiter) error { return l.Reset(context.Background(), "k") }},
	{"Refund", func(l *limiter.Limiter) error { return l.Refund(context.Background(), "k", 1) }},
}

// exhaustThenFill exhausts key "k" (one token an hour) through a limiter,
// which then denies it from its cache, and fills it again through another
// limiter on the same store with fill. It returns the first limiter.
func exhaustThenFill(t *testing.T, fill func(*limiter.Limiter) error) (*limiter.Limiter, *faultstore.Store, *fakeclock.Clock) {
	t.Helper()
	buckets := []limiter.Bucket{{Capacity: 1, Period: time.Hour}}
	lim, fs, clock := faulty(t, buckets)
	other, err := limiter.New(fs, buckets, limiter.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	mustAllow(t, lim, fs, true, 1, "first call")
	mustAllow(t, lim, fs, false, 0, "exhausted, from the cache")
	if err := fill(other); err != nil {
		t.Fatal(err)
	}
	return lim, fs, clock
}

// TestResetElsewhereSeenWithinCacheTrust: a Reset or Refund through
// another Limiter (or process) fills the key in the store, which a
// limiter denying from its cached record does not see. It sees it once
// the record is cacheTrust old, instead of only when the cached state
// would refill on its own (an hour here).
func TestResetElsewhereSeenWithinCacheTrust(t *testing.T) {
	for _, tc := range fills {
		t.Run(tc.name, func(t *testing.T) {
			lim, fs, clock := exhaustThenFill(t, tc.fill)
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
	for _, tc := range fills {
		t.Run(tc.name, func(t *testing.T) {
			lim, fs, _ := exhaustThenFill(t, tc.fill)
			p, err := lim.Peek(context.Background(), "k")
			if err != nil || !p.Allowed {
				t.Fatalf("Peek = %+v, %v; want Allowed", p, err)
			}
			mustAllow(t, lim, fs, true, 1, "after Peek saw the key filled")
		})
	}
}

// TestClockBackCannotExtendTrust: a record seen at a time the clock has
// gone back from is read again; trusting it would deny for as long as
// the clock's step, ignoring a Reset made meanwhile.
func TestClockBackCannotExtendTrust(t *testing.T) {
	lim, fs, clock := exhaustThenFill(t, fills[0].fill)
	clock.Advance(-10 * time.Minute)
	mustAllow(t, lim, fs, true, 2, "the clock went back: read (get, then swap)")
	mustAllow(t, lim, fs, false, 0, "exhausted again, from the cache")
}

// TestOutageFailsTheRead: when the read of a record too old to deny
// fails, the call fails with the store's error (the caller chooses what to
// do, as with any store error), not a silent denial; a denial from a
// record still trusted needs no store call, so it meets no error.
func TestOutageFailsTheRead(t *testing.T) {
	lim, fs, clock := faulty(t, []limiter.Bucket{{Capacity: 1, Period: time.Hour}})
	mustAllow(t, lim, fs, true, 1, "first call")
	down := fmt.Errorf("test: %w", storage.ErrUnavailable)
	fs.FailAll(down)
	mustAllow(t, lim, fs, false, 0, "the store is down, the record still trusted: from the cache")
	clock.Advance(cacheTrust)
	for range 3 {
		fs.ResetCounts()
		if d, err := lim.Allow(context.Background(), "k"); !errors.Is(err, down) || d != (limiter.Decision{}) {
			t.Fatalf("the store is down, the record too old: Allow = %+v, %v; want the store's error", d, err)
		}
		// Nothing was written: the record is still the latest seen, and
		// the next call reads it again rather than guess.
		if c := fs.Calls(); c.Get != 1 || c.CAS != 0 {
			t.Fatalf("the store is down: %d gets and %d compare-and-swaps, want one read", c.Get, c.CAS)
		}
	}
	fs.FailAll(nil)
	clock.Advance(cacheTrust)
	if d, err := lim.Allow(context.Background(), "k"); err != nil || d.Allowed {
		t.Fatalf("the store is back: Allow = %+v, %v; want a denial", d, err)
	}
	mustAllow(t, lim, fs, false, 0, "from the cache again")
}

// TestConflictRecordRemembered: a compare-and-swap that loses to another
// limiter brings back the record, which denies the calls after it with no
// store call.
func TestConflictRecordRemembered(t *testing.T) {
	buckets := []limiter.Bucket{{Capacity: 2, Period: time.Hour}}
	lim, fs, clock := faulty(t, buckets)
	other, err := limiter.New(fs, buckets, limiter.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	mustAllow(t, lim, fs, true, 1, "first call")
	if d, err := other.Allow(context.Background(), "k"); err != nil || !d.Allowed {
		t.Fatalf("other limiter: %+v, %v", d, err)
	}
	mustAllow(t, lim, fs, false, 1, "a swap that loses, then a denial from the record it brought")
	mustAllow(t, lim, fs, false, 0, "from the cache")
}

// TestStoreClockFirstReadRemembered: on the store's clock, the first call
// reads the record with the clock, and that record denies the calls
// after it.
func TestStoreClockFirstReadRemembered(t *testing.T) {
	buckets := []limiter.Bucket{{Capacity: 1, Period: time.Hour}}
	lim, fs, clock := faulty(t, buckets)
	mustAllow(t, lim, fs, true, 1, "first call")
	timed, err := limiter.New(timedStore{Store: fs, clock: clock}, buckets, limiter.WithStoreClock(), limiter.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	mustAllow(t, timed, fs, false, 1, "store clock: the first call reads")
	mustAllow(t, timed, fs, false, 0, "from the cache")
}

// afterGet runs a hook after each Get, before its reply reaches the
// limiter.
type afterGet struct {
	storage.Store
	hook func()
}

func (s *afterGet) Get(ctx context.Context, key string) (storage.Record, error) {
	rec, err := s.Store.Get(ctx, key)
	if s.hook != nil {
		s.hook()
	}
	return rec, err
}

// TestResetDuringReadIsNotUndone: a Reset that lands while a flight reads
// a record is not undone by the flight remembering what it read.
func TestResetDuringReadIsNotUndone(t *testing.T) {
	buckets := []limiter.Bucket{{Capacity: 1, Period: time.Hour}}
	_, fs, clock := faulty(t, buckets)
	st := &afterGet{Store: fs}
	lim, err := limiter.New(st, buckets, limiter.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	mustAllow(t, lim, fs, true, 1, "first call")
	clock.Advance(cacheTrust)
	st.hook = func() {
		st.hook = nil
		if err := lim.Reset(context.Background(), "k"); err != nil {
			t.Error(err)
		}
	}
	mustAllow(t, lim, fs, false, 1, "the read, which a Reset follows")
	mustAllow(t, lim, fs, true, 1, "after the Reset")
}

// TestPeekConfirmsCachedRecord: a Peek that finds the cached record still
// in the store renews the trust in it.
func TestPeekConfirmsCachedRecord(t *testing.T) {
	lim, fs, clock := faulty(t, []limiter.Bucket{{Capacity: 1, Period: time.Hour}})
	mustAllow(t, lim, fs, true, 1, "first call")
	clock.Advance(cacheTrust - time.Millisecond)
	if _, err := lim.Peek(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(cacheTrust - time.Millisecond)
	mustAllow(t, lim, fs, false, 0, "within cacheTrust of the Peek")
}
