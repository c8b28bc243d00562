package memory_test

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/sluice-go/sluice/storage/memory"
)

// Removing a key with a low version after one with a high version must not
// lower the floor new entries start from: the high key, written again,
// still gets a version above every one it had.
func TestVersionFloorNeverDrops(t *testing.T) {
	s := memory.New(memory.WithSweepInterval(time.Hour))
	defer s.Close()
	ctx := context.Background()
	var high uint64
	for range 5 {
		high = mustSwap(t, s, "high", high, "v", longTTL).Version
	}
	low := mustSwap(t, s, "low", 0, "v", longTTL)
	if low.Version >= high {
		t.Fatalf("setup: low key's version %d not below high key's %d", low.Version, high)
	}
	if err := s.Delete(ctx, "high"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "low"); err != nil {
		t.Fatal(err)
	}
	if rec := mustSwap(t, s, "high", 0, "again", longTTL); rec.Version <= high {
		t.Fatalf("key recreated after Delete got version %d, want above %d, its version before", rec.Version, high)
	}
}

// A value too long to be inline that CompareAndSwap stored and returned
// was handed out: a later hold must build its value elsewhere, also when
// no Get came in between (which would mark it handed out by itself).
func TestHoldNeverChangesLongValueReturnedBySwap(t *testing.T) {
	s := memory.New()
	defer s.Close()
	ctx := context.Background()
	first, swapped, third := strings.Repeat("a", 40), strings.Repeat("b", 40), strings.Repeat("c", 40)
	v := commit(t, s, "p:", "k", first, time.Hour)
	rec := mustSwap(t, s, "p:k", v, swapped, time.Hour)
	commit(t, s, "p:", "k", third, time.Hour)
	if string(rec.Value) != swapped {
		t.Fatalf("the value CompareAndSwap returned changed to %q after a hold committed %q", rec.Value, third)
	}
	if got, err := s.Get(ctx, "p:k"); err != nil || string(got.Value) != third {
		t.Fatalf("Get = %q, %v; want %q", got.Value, err, third)
	}
}

// A compare-and-swap that expects a version of an absent key conflicts
// without leaving an entry behind: only swaps that write fill the store.
func TestConflictOnAbsentKeyLeavesNoEntry(t *testing.T) {
	s := memory.New(memory.WithSweepInterval(time.Hour))
	defer s.Close()
	rec, ok, err := s.CompareAndSwap(context.Background(), "absent", 7, []byte("v"), time.Hour)
	if err != nil || ok || rec.Version != 0 || rec.Value != nil {
		t.Fatalf("CompareAndSwap(absent, 7) = %+v, %v, %v; want a conflict with the absent record", rec, ok, err)
	}
	if n := s.Len(); n != 0 {
		t.Fatalf("Len() = %d after a conflict on an absent key, want 0", n)
	}
}

// The longest time to live saturates instead of overflowing into the
// past: the record stays.
func TestLongestTTLSaturates(t *testing.T) {
	s := memory.New()
	defer s.Close()
	ctx := context.Background()
	rec := mustSwap(t, s, "forever", 0, "v", time.Duration(math.MaxInt64))
	if got, err := s.Get(ctx, "forever"); err != nil || got.Version != rec.Version {
		t.Fatalf("Get after a swap with ttl MaxInt64 = %+v, %v; want version %d", got, err, rec.Version)
	}
}
