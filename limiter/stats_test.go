package limiter_test

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-go/sluice/internal/faultstore"
	"github.com/sluice-go/sluice/limiter"
)

// batchOf3 runs a leader and two calls batched behind it on key "k" of
// lim, holding the leader's compare-and-swap until both are queued.
func batchOf3(t *testing.T, lim *limiter.Limiter, fs *faultstore.Store) {
	t.Helper()
	var armed atomic.Bool
	armed.Store(true)
	release, entered := make(chan struct{}), make(chan struct{})
	fs.Hook(func(op faultstore.Op, key string) {
		if op == faultstore.OpCAS && armed.CompareAndSwap(true, false) {
			close(entered)
			<-release
		}
	})
	defer fs.Hook(nil)
	done := make(chan error, 3)
	call := func() {
		go func() {
			_, err := lim.Allow(context.Background(), "k")
			done <- err
		}()
	}
	call()
	<-entered
	call()
	waitQueued(t, lim, 1)
	call()
	waitQueued(t, lim, 2)
	close(release)
	for range 3 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// TestBatchedCallsShareStats: every call of a batch reports the batch's
// store calls and retries, whether the batch wrote or was all denied.
func TestBatchedCallsShareStats(t *testing.T) {
	t.Run("written", func(t *testing.T) {
		rec := &recorder{}
		lim, fs, _ := faulty(t, []limiter.Bucket{{Capacity: 10, Period: time.Hour}}, limiter.WithObserver(rec))
		batchOf3(t, lim, fs)
		if len(rec.decisions) != 3 {
			t.Fatalf("%d decisions observed, want 3", len(rec.decisions))
		}
		for i, e := range rec.decisions {
			if e.StoreCalls != 1 || e.Retries != 0 || !e.Decision.Allowed {
				t.Errorf("decision %d: %+v; want allowed, 1 store call (the batch's), no retry", i, e)
			}
		}
	})
	t.Run("all denied after a conflict", func(t *testing.T) {
		rec := &recorder{}
		lim, fs, clock := faulty(t, []limiter.Bucket{{Capacity: 2, Period: time.Hour}}, limiter.WithObserver(rec))
		other, err := limiter.New(fs, lim.Buckets(), limiter.WithClock(clock))
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		// lim remembers 1 token left; then another process takes it.
		for _, l := range []*limiter.Limiter{lim, other} {
			if d, err := l.Allow(ctx, "k"); err != nil || !d.Allowed {
				t.Fatalf("setting up: %+v, %v; want allowed", d, err)
			}
		}
		rec.decisions = nil
		batchOf3(t, lim, fs)
		if len(rec.decisions) != 3 {
			t.Fatalf("%d decisions observed, want 3", len(rec.decisions))
		}
		// The leader meets the conflict alone: 1 store call, 1 retry. The
		// two calls queued behind it are decided together by the next
		// flight, and report the same stats, whatever that flight needed.
		// (Events arrive in no set order.)
		events := slices.Clone(rec.decisions)
		for i, e := range events {
			if e.Decision.Allowed {
				t.Errorf("decision %d: %+v; want denied", i, e)
			}
		}
		leader := slices.IndexFunc(events, func(e limiter.Event) bool { return e.StoreCalls == 1 && e.Retries == 1 })
		if leader < 0 {
			t.Fatalf("decisions %+v: none reports the leader's 1 store call and 1 retry", events)
		}
		batch := slices.Delete(events, leader, leader+1)
		if a, b := batch[0], batch[1]; a.StoreCalls != b.StoreCalls || a.Retries != b.Retries {
			t.Errorf("the two calls decided together report %d store calls and %d retries, and %d and %d; want the same (the batch's)",
				a.StoreCalls, a.Retries, b.StoreCalls, b.Retries)
		}
	})
}
