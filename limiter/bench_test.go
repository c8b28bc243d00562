package limiter_test

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/sluice-go/sluice/conformance"
	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/memory"
)

// BenchmarkMemory is the limiter on the memory store; BenchmarkXTimeRate
// below does the same work with golang.org/x/time/rate, one Limiter per
// key in a sync.Map, so that one run compares the two.
func BenchmarkMemory(b *testing.B) {
	conformance.RunBenchmarks(b, func(tb testing.TB) storage.Store {
		s := memory.New()
		tb.Cleanup(func() { s.Close() })
		return s
	})
}

func BenchmarkXTimeRate(b *testing.B) {
	keys := make([]string, conformance.BenchKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("user:%d", i)
	}
	newLimiters := func(limit rate.Limit, burst int) func(string) *rate.Limiter {
		var m sync.Map
		return func(key string) *rate.Limiter {
			if l, ok := m.Load(key); ok {
				return l.(*rate.Limiter)
			}
			l, _ := m.LoadOrStore(key, rate.NewLimiter(limit, burst))
			return l.(*rate.Limiter)
		}
	}
	run := func(b *testing.B, g int, key func(w, i int) string, get func(string) *rate.Limiter) {
		b.ReportAllocs()
		if g == 1 {
			for i := range b.N {
				get(key(0, i)).Allow()
			}
		} else {
			b.SetParallelism(max(1, (g+runtime.GOMAXPROCS(0)-1)/runtime.GOMAXPROCS(0)))
			var workers atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				w := int(workers.Add(1))
				for i := 0; pb.Next(); i++ {
					get(key(w, i)).Allow()
				}
			})
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
	}
	for _, g := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("HotKey/goroutines=%d", g), func(b *testing.B) {
			run(b, g, func(int, int) string { return "hot" }, newLimiters(rate.Inf, 1))
		})
	}
	for _, g := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("Keys%d/goroutines=%d", len(keys), g), func(b *testing.B) {
			run(b, g, func(w, i int) string { return keys[(w*7919+i)%len(keys)] }, newLimiters(1e12, 1<<30))
		})
	}
	b.Run("DenyExhausted", func(b *testing.B) {
		get := newLimiters(rate.Every(time.Hour), 1)
		get("exhausted").Allow()
		run(b, 1, func(int, int) string { return "exhausted" }, get)
	})
}
