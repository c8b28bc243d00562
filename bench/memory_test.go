package bench

import (
	"context"
	"sync"
	"testing"
	"time"

	golimiter "github.com/sethvargo/go-limiter/memorystore"
	"github.com/throttled/throttled/v2"
	throttledmem "github.com/throttled/throttled/v2/store/memstore"
	ulule "github.com/ulule/limiter/v3"
	ululemem "github.com/ulule/limiter/v3/drivers/store/memory"
	"golang.org/x/time/rate"

	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/memory"
)

// BenchmarkMemory compares sluice on its memory store with the in-process
// limiters.
func BenchmarkMemory(b *testing.B) {
	e := newEnv(b)
	runCases(b, e, inProcessCases, []contender{
		sluiceUnnamed("sluice", func(e *env, _ string) (storage.Store, error) {
			s := memory.New()
			e.cleanup(func() { s.Close() })
			return s, nil
		}),
		xTimeRate,
		goLimiterMemory,
		throttledMemory,
		ululeMemory,
	})
}

// xTimeRate is golang.org/x/time/rate as its users do it: one Limiter per
// key in a sync.Map.
var xTimeRate = contender{name: "x-time-rate", setup: func(_ *env, _ string, lim limit) (decideFunc, func() int64, error) {
	every := rate.Limit(float64(lim.tokens) / lim.period.Seconds())
	var m sync.Map
	return func(_ context.Context, key string) (bool, error) {
		l, ok := m.Load(key)
		if !ok {
			l, _ = m.LoadOrStore(key, rate.NewLimiter(every, int(lim.tokens)))
		}
		return l.(*rate.Limiter).Allow(), nil
	}, nil, nil
}}

// goLimiterMemory is github.com/sethvargo/go-limiter's memorystore.
var goLimiterMemory = contender{name: "go-limiter", setup: func(e *env, _ string, lim limit) (decideFunc, func() int64, error) {
	store, err := golimiter.New(&golimiter.Config{Tokens: uint64(lim.tokens), Interval: lim.period})
	if err != nil {
		return nil, nil, err
	}
	e.cleanup(func() { store.Close(context.Background()) })
	return func(ctx context.Context, key string) (bool, error) {
		_, _, _, ok, err := store.Take(ctx, key)
		return ok, err
	}, nil, nil
}}

// throttledMemory is github.com/throttled/throttled/v2's GCRA limiter on
// its memstore (no key bound, its fastest form).
var throttledMemory = contender{name: "throttled", setup: func(_ *env, _ string, lim limit) (decideFunc, func() int64, error) {
	store, err := throttledmem.NewCtx(0)
	if err != nil {
		return nil, nil, err
	}
	return throttledDecide(store, lim)
}}

// throttledDecide returns the decision function of a throttled GCRA
// limiter over store: burst lim.tokens (MaxBurst counts the calls beyond
// the first), refilled at lim.tokens per lim.period.
func throttledDecide(store throttled.GCRAStoreCtx, lim limit) (decideFunc, func() int64, error) {
	rl, err := throttled.NewGCRARateLimiterCtx(store, throttled.RateQuota{
		MaxRate:  throttled.PerDuration(int(lim.tokens), lim.period),
		MaxBurst: int(lim.tokens) - 1,
	})
	if err != nil {
		return nil, nil, err
	}
	return func(ctx context.Context, key string) (bool, error) {
		limited, _, err := rl.RateLimitCtx(ctx, key, 1)
		return !limited, err
	}, nil, nil
}

// ululeMemory is github.com/ulule/limiter/v3 on its memory store (a fixed
// window of lim.tokens per lim.period: not a token bucket, but the same
// allowance).
var ululeMemory = contender{name: "ulule", setup: func(_ *env, ns string, lim limit) (decideFunc, func() int64, error) {
	store := ululemem.NewStoreWithOptions(ululeStoreOptions(ns))
	return ululeDecide(store, lim), nil, nil
}}

func ululeDecide(store ulule.Store, lim limit) decideFunc {
	l := ulule.New(store, ulule.Rate{Period: lim.period, Limit: lim.tokens})
	return func(ctx context.Context, key string) (bool, error) {
		c, err := l.Get(ctx, key)
		return !c.Reached, err
	}
}

func ululeStoreOptions(ns string) ulule.StoreOptions {
	return ulule.StoreOptions{Prefix: ns, CleanUpInterval: time.Minute, MaxRetry: ulule.DefaultMaxRetry}
}
