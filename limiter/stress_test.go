package limiter

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-go/sluice/internal/fakeclock"
	"github.com/sluice-go/sluice/internal/faultstore"
	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/memory"
)

func TestStressExactUnderCancellation(t *testing.T) {
	for _, cfg := range []struct {
		name     string
		inPlace  bool
		cache    int
		lims     int
		conflict bool
		ambig    bool
	}{
		{"flight-cache0", false, 0, 1, false, false},
		{"flight-cache1-3lims", false, 1, 3, true, false},
		{"flight-ambig", false, 1, 2, true, true},
		{"local-cache1-3lims", true, 1, 3, false, false},
	} {
		t.Run(cfg.name, func(t *testing.T) {
			for round := 0; round < 30; round++ {
				stressRound(t, cfg.inPlace, cfg.cache, cfg.lims, cfg.conflict, cfg.ambig)
			}
		})
	}
}

func stressRound(t *testing.T, inPlace bool, cache, nlim int, conflict, ambig bool) {
	clk := fakeclock.New(time.Unix(1e9, 0))
	mem := memory.New()
	defer mem.Close()
	var st storage.Store = mem
	var fs *faultstore.Store
	if !inPlace {
		fs = faultstore.New(mem)
		fs.SetLatency(50 * time.Microsecond)
		st = fs
	}
	const C = 200
	var lims []*Limiter
	for range nlim {
		l, err := New(st, []Bucket{{Capacity: C, Period: time.Hour}, {Capacity: C * 2, Period: 24 * time.Hour}}, WithClock(clk), WithCacheSize(cache))
		if err != nil {
			t.Fatal(err)
		}
		lims = append(lims, l)
	}
	keys := []string{"a", "b", "c", "d", "e"}
	var allowed, unknown [5]atomic.Int64
	var bad atomic.Int64
	var wg sync.WaitGroup
	for g := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for i := 0; i < 60; i++ {
				ki := r.IntN(len(keys))
				l := lims[r.IntN(len(lims))]
				cost := int64(1 + r.IntN(3))
				ctx, cancel := context.WithCancel(context.Background())
				if r.IntN(4) == 0 {
					dl := time.Duration(r.IntN(200)) * time.Microsecond
					go func() { time.Sleep(dl); cancel() }()
				}
				if fs != nil && r.IntN(10) == 0 {
					if conflict {
						fs.ConflictNext(1)
					}
					if ambig {
						fs.AmbiguousNext(1)
					}
				}
				if r.IntN(20) == 0 {
					l.Peek(ctx, keys[ki])
				}
				d, err := l.AllowN(ctx, keys[ki], cost)
				switch {
				case err == nil && d.Allowed:
					allowed[ki].Add(cost)
				case err == nil:
				default:
					unknown[ki].Add(cost)
					if ctx.Err() == nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
						bad.Add(1)
					}
				}
				cancel()
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("hang")
	}
	if fs != nil {
		fs.AmbiguousNext(0)
		fs.ConflictNext(0)
	}
	for ki, k := range keys {
		d, err := lims[0].Peek(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		charged := C - d.Remaining
		if d.Remaining == 0 && allowed[ki].Load() > C {
			t.Errorf("key %s: admitted %d > C", k, allowed[ki].Load())
		}
		if allowed[ki].Load() > charged {
			t.Errorf("key %s: over-admitted: allowed %d, charged %d", k, allowed[ki].Load(), charged)
		}
		if charged > allowed[ki].Load()+unknown[ki].Load() {
			t.Errorf("key %s: over-charged: charged %d > allowed %d + unknown %d", k, charged, allowed[ki].Load(), unknown[ki].Load())
		}
	}
	if n := bad.Load(); n > 0 {
		t.Errorf("%d calls with a live context got a context error", n)
	}
}
