package limiter_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sluice-go/sluice/internal/faultstore"
	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/memory"
)

// TestResetWithFallback: Reset empties the fallback limiter's record too,
// and reports the store's failure even when the fallback's Reset works.
func TestResetWithFallback(t *testing.T) {
	hour := []limiter.Bucket{{Capacity: 1, Period: time.Hour}}
	lim, local, fs := faultyWithFallback(t, hour, hour)
	ctx := context.Background()
	fs.FailAll(storage.ErrUnavailable)
	if d, err := lim.Allow(ctx, "k"); err != nil || !d.Allowed {
		t.Fatalf("first call, from the fallback: %+v, %v", d, err)
	}
	if err := lim.Reset(ctx, "k"); !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("Reset with the store down and the fallback up = %v, want storage.ErrUnavailable", err)
	}
	if d, err := local.Peek(ctx, "k"); err != nil || !d.Allowed {
		t.Errorf("the fallback after Reset: %+v, %v; want its key full again", d, err)
	}
}

// TestFallbackNotAskedWhenContextEnded: a caller whose context ends during
// a failed store call gets the store's error, as without a fallback; one
// whose context ended before the call gets ctx.Err() as it is. The
// fallback limiter is asked in neither case, for AllowN as for Refund.
func TestFallbackNotAskedWhenContextEnded(t *testing.T) {
	mem := memory.New()
	defer mem.Close()
	lfs := faultstore.New(mem) // counts the fallback's store calls
	local, err := limiter.New(lfs, []limiter.Bucket{{Capacity: 1, Period: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	lim, fs, _ := faulty(t, []limiter.Bucket{{Capacity: 1, Period: time.Hour}}, limiter.WithFallback(local))
	fs.FailAll(storage.ErrUnavailable)
	calls := map[string]func(ctx context.Context) error{
		"Allow":  func(ctx context.Context) error { _, err := lim.Allow(ctx, "k"); return err },
		"Refund": func(ctx context.Context) error { return lim.Refund(ctx, "k", 1) },
	}
	for name, call := range calls {
		ctx, cancel := context.WithCancel(context.Background())
		fs.Hook(func(faultstore.Op, string) { cancel() }) // the context ends in the store call
		if err := call(ctx); !errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("%s, the context ending in a failed store call: %v, want the store's storage.ErrUnavailable", name, err)
		}
		fs.Hook(nil)
		if err := call(ctx); err != context.Canceled {
			t.Errorf("%s with a context ended before the call: %v, want context.Canceled", name, err)
		}
	}
	if got := lfs.Calls(); got != (faultstore.Counts{}) {
		t.Errorf("the fallback's store was called %+v for a caller whose context had ended, want never", got)
	}
}

// TestFallbackTooSmallForCost: a cost the limiter's buckets accept but the
// fallback's refuse is not decided by the fallback: the caller gets the
// store's failure, as without a fallback, never the fallback's refusal of
// the cost, which would blame the caller's input. Smaller costs are still
// decided by the fallback, Peek included.
func TestFallbackTooSmallForCost(t *testing.T) {
	lim, _, fs := faultyWithFallback(t, []limiter.Bucket{{Capacity: 10, Period: time.Minute}}, []limiter.Bucket{{Capacity: 2, Period: time.Minute}})
	ctx := context.Background()
	fs.FailAll(storage.ErrUnavailable)
	_, err := lim.AllowN(ctx, "k", 5)
	if !errors.Is(err, storage.ErrUnavailable) || errors.Is(err, limiter.ErrCostExceedsCapacity) {
		t.Errorf("AllowN(5) with the store down and a fallback of capacity 2 = %v, want the store's storage.ErrUnavailable", err)
	}
	if d, err := lim.AllowN(ctx, "k", 2); err != nil || !d.Allowed || !d.Fallback || d.Remaining != 0 {
		t.Errorf("AllowN(2) with the store down = %+v, %v; want allowed by the fallback, 0 left", d, err)
	}
	if d, err := lim.Peek(ctx, "k"); err != nil || d.Allowed || !d.Fallback {
		t.Errorf("Peek with the store down = %+v, %v; want the fallback's empty bucket", d, err)
	}
	if _, err := lim.AllowN(ctx, "k", 11); !errors.Is(err, limiter.ErrCostExceedsCapacity) {
		t.Errorf("AllowN(11), above the limiter's own capacity = %v, want limiter.ErrCostExceedsCapacity", err)
	}
}

// TestFallbackCoversStoreTimeouts: a context error from the store while
// the caller's context is live is the store's own failure (a driver's
// internal timeout), which the fallback covers like any other; so is a
// deadline error before the caller's deadline. A deadline error once the
// caller's deadline has passed is the caller's, and is returned.
func TestFallbackCoversStoreTimeouts(t *testing.T) {
	hour := []limiter.Bucket{{Capacity: 1, Period: time.Hour}}
	lim, _, fs := faultyWithFallback(t, hour, hour)
	for i, storeErr := range []error{
		context.DeadlineExceeded,
		context.Canceled,
		fmt.Errorf("driver: %w: %w", storage.ErrUnavailable, context.DeadlineExceeded),
	} {
		fs.FailAll(storeErr)
		key := fmt.Sprint("k", i)
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		d, err := lim.Allow(ctx, key)
		if err != nil || !d.Allowed || !d.Fallback {
			t.Errorf("Allow, the store failing with %v before the caller's deadline: %+v, %v; want a decision of the fallback", storeErr, d, err)
		}
		if d, err := lim.Peek(ctx, key); err != nil || !d.Fallback {
			t.Errorf("Peek, the store failing with %v: %+v, %v; want the fallback's", storeErr, d, err)
		}
		cancel()
	}
	// The caller's deadline has passed, and the store reports it before
	// the context does (a deadline in the past here, with a context that
	// cannot end: Err stays nil).
	fs.FailAll(context.DeadlineExceeded)
	past := deadlineOnly{Context: context.Background(), at: time.Now().Add(-time.Millisecond)}
	if d, err := lim.Allow(past, "late"); !errors.Is(err, context.DeadlineExceeded) || d.Fallback {
		t.Errorf("Allow after the caller's deadline: %+v, %v; want context.DeadlineExceeded, not the fallback", d, err)
	}
}

// deadlineOnly is a context with a deadline that never ends: a context
// whose deadline has passed but whose Err does not report it yet.
type deadlineOnly struct {
	context.Context
	at time.Time
}

func (c deadlineOnly) Deadline() (time.Time, bool) { return c.at, true }

// faultyWithFallback returns a limiter with shared's buckets on a faultstore (see
// faulty), made WithFallback a limiter with local's buckets on a memory
// store of its own, which it also returns.
func faultyWithFallback(t *testing.T, shared, local []limiter.Bucket) (lim, fallback *limiter.Limiter, fs *faultstore.Store) {
	t.Helper()
	mem := memory.New()
	t.Cleanup(func() { mem.Close() })
	fallback, err := limiter.New(mem, local)
	if err != nil {
		t.Fatal(err)
	}
	lim, fs, _ = faulty(t, shared, limiter.WithFallback(fallback))
	return lim, fallback, fs
}
