package conformance

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-go/sluice/limiter"
)

// BenchKeys is how many keys the spread benchmarks use.
const BenchKeys = 10_000

// RunBenchmarks measures a limiter on the stores that factory returns:
// one hot key and BenchKeys keys, each with 1, 16 and 64 goroutines, and
// the denial of an exhausted key. Allowed calls dominate (the buckets are
// large), so the figures are the cost of a decision that writes. Each
// benchmark reports allocations and decisions per second. The factory is
// any Factory but those that take a *testing.T, which a benchmark cannot
// give it.
func RunBenchmarks[F Factory](b *testing.B, factory F) {
	newStore := asNewStore(factory)
	if newStore == nil {
		b.Fatal("conformance: RunBenchmarks: nil factory")
	}
	allow := []limiter.Bucket{{Capacity: limiter.MaxCapacity, Period: time.Second}}
	keys := benchKeys(BenchKeys)
	for _, g := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("HotKey/goroutines=%d", g), func(b *testing.B) {
			lim := benchLimiter(b, newStore, allow)
			runGoroutines(b, g, func(int, int) string { return "hot" }, lim)
		})
	}
	for _, g := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("Keys%d/goroutines=%d", len(keys), g), func(b *testing.B) {
			lim := benchLimiter(b, newStore, allow)
			runGoroutines(b, g, func(w, i int) string { return keys[(w*7919+i)%len(keys)] }, lim)
		})
	}
	b.Run("DenyExhausted", func(b *testing.B) {
		lim := benchLimiter(b, newStore, []limiter.Bucket{{Capacity: 1, Period: time.Hour}})
		if d, err := lim.Allow(context.Background(), "exhausted"); err != nil || !d.Allowed {
			b.Fatalf("first call: %+v, %v", d, err)
		}
		runGoroutines(b, 1, func(int, int) string { return "exhausted" }, lim)
	})
}

// benchKeys returns n distinct keys, checked.
func benchKeys(n int) []string {
	keys := make([]string, n)
	seen := make(map[string]bool, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("user:%d", i)
		seen[keys[i]] = true
	}
	if len(seen) != n {
		panic("conformance: benchmark keys are not distinct")
	}
	return keys
}

func benchLimiter(b *testing.B, newStore NewStore, buckets []limiter.Bucket) *limiter.Limiter {
	lim, err := limiter.New(newStore(b), buckets, limiter.WithName(fmt.Sprintf("bench%d", time.Now().UnixNano())))
	if err != nil {
		b.Fatal(err)
	}
	return lim
}

// runGoroutines calls Allow b.N times in all from g goroutines; worker w's
// i-th call uses key(w, i). It reports decisions per second.
func runGoroutines(b *testing.B, g int, key func(w, i int) string, lim *limiter.Limiter) {
	ctx := context.Background()
	b.ReportAllocs()
	var failed atomic.Value
	if g == 1 {
		b.ResetTimer()
		for i := range b.N {
			if _, err := lim.Allow(ctx, key(0, i)); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		b.SetParallelism(max(1, (g+runtime.GOMAXPROCS(0)-1)/runtime.GOMAXPROCS(0)))
		var workers atomic.Int64
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			w := int(workers.Add(1))
			for i := 0; pb.Next(); i++ {
				if _, err := lim.Allow(ctx, key(w, i)); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}
