package limiter_test

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/sluice-go/sluice/internal/faultstore"
	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/memory"
)

// TestCacheSizeIsExactBoundWhenIdle: with every key idle, the cache never
// holds more than its size (64 shards of ceil(n/64) keys).
func TestCacheSizeIsExactBoundWhenIdle(t *testing.T) {
	lim, _, _ := faulty(t, []limiter.Bucket{{Capacity: 1, Period: time.Hour}}, limiter.WithCacheSize(64))
	ctx := context.Background()
	for i := range 1000 {
		if _, err := lim.Allow(ctx, fmt.Sprintf("key-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := limiter.CachedKeys(lim); n > 64 {
		t.Errorf("%d idle keys cached, want at most 64", n)
	}
}

// The largest cache size keeps every key, as any large size does: the
// size per shard is rounded up without overflowing.
func TestCacheSizeMaxInt(t *testing.T) {
	lim, fs, _ := faulty(t, []limiter.Bucket{{Capacity: 1, Period: time.Hour}}, limiter.WithCacheSize(math.MaxInt))
	ctx := context.Background()
	for i := range 10 {
		if _, err := lim.Allow(ctx, fmt.Sprint("key-", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := limiter.CachedKeys(lim); n != 10 {
		t.Errorf("%d keys cached after calls on 10 keys, want 10", n)
	}
	fs.ResetCounts()
	if d, err := lim.Allow(ctx, "key-0"); err != nil || d.Allowed {
		t.Fatalf("Allow on an exhausted key = %+v, %v; want a denial", d, err)
	}
	if c := fs.Calls(); c.Get+c.CAS != 0 {
		t.Errorf("the denial of an exhausted key cost store calls %+v, want none (denied from the cache)", c)
	}
}

// inflight counts the compare-and-swaps in progress per key.
type inflight struct {
	storage.Store
	mu       sync.Mutex
	cur, max map[string]int
}

func (s *inflight) CompareAndSwap(ctx context.Context, key string, exp uint64, v []byte, ttl time.Duration) (storage.Record, bool, error) {
	s.mu.Lock()
	s.cur[key]++
	s.max[key] = max(s.max[key], s.cur[key])
	s.mu.Unlock()
	defer func() { s.mu.Lock(); s.cur[key]--; s.mu.Unlock() }()
	return s.Store.CompareAndSwap(ctx, key, exp, v, ttl)
}

// TestOneFlightPerKey: however small the cache, a key with a store call in
// flight is never forgotten, so one limiter never has two store calls in
// flight on one key (later calls batch behind it), even while other keys
// churn through the cache.
func TestOneFlightPerKey(t *testing.T) {
	for _, size := range []int{0, 64} {
		t.Run(fmt.Sprint("cache", size), func(t *testing.T) {
			mem := memory.New()
			defer mem.Close()
			fs := faultstore.New(mem)
			fs.SetLatency(200 * time.Microsecond)
			st := &inflight{Store: fs, cur: map[string]int{}, max: map[string]int{}}
			lim, err := limiter.New(st, []limiter.Bucket{{Capacity: 1 << 20, Period: time.Hour}}, limiter.WithCacheSize(size))
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for g := range 16 {
				wg.Go(func() {
					for i := range 200 {
						key := "hot"
						if g%2 == 1 {
							key = fmt.Sprintf("cold-%d-%d", g, i) // churns the cache
						}
						if _, err := lim.Allow(context.Background(), key); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			if got := st.max["1048576/1h:hot"]; got != 1 {
				t.Errorf("at most %d compare-and-swaps in flight on one key at once, want 1", got)
			}
		})
	}
}

// TestSmallCacheRemembers: a cache smaller than its shard count still
// remembers a key, so an exhausted key is denied with no store call.
func TestSmallCacheRemembers(t *testing.T) {
	lim, fs, _ := faulty(t, []limiter.Bucket{{Capacity: 1, Period: time.Hour}}, limiter.WithCacheSize(10))
	ctx := context.Background()
	if d, err := lim.Allow(ctx, "k"); err != nil || !d.Allowed {
		t.Fatalf("first call: %+v, %v", d, err)
	}
	fs.ResetCounts()
	if d, err := lim.Allow(ctx, "k"); err != nil || d.Allowed {
		t.Fatalf("second call: %+v, %v; want denied", d, err)
	}
	if got := fs.Calls(); got != (faultstore.Counts{}) {
		t.Errorf("a denial of an exhausted key with WithCacheSize(10) made %+v store calls, want none", got)
	}
}
