package otelobserver_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/sluice-go/sluice/internal/fakeclock"
	"github.com/sluice-go/sluice/internal/faultstore"
	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/limiter/otelobserver"
	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/memory"
)

// newObserver returns an Observer on an SDK provider read by hand.
func newObserver(t *testing.T, opts ...otelobserver.Option) (*otelobserver.Observer, *sdkmetric.ManualReader) {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	obs, err := otelobserver.New(mp, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return obs, reader
}

// newLimiter returns a limiter of 3 per minute on store, on a manual clock.
func newLimiter(t *testing.T, store storage.Store, opts ...limiter.Option) (*limiter.Limiter, *fakeclock.Clock) {
	t.Helper()
	clock := fakeclock.New(time.Unix(1_700_000_000, 0))
	lim, err := limiter.New(store, []limiter.Bucket{{Capacity: 3, Period: time.Minute}},
		append([]limiter.Option{limiter.WithClock(clock)}, opts...)...)
	if err != nil {
		t.Fatalf("limiter.New: %v", err)
	}
	return lim, clock
}

// newMemory returns a memory store seen as a plain storage.Store, as a
// networked store is: the limiter then caches records and denies from the
// cache, which the cached attribute reports. (On the memory store itself
// the limiter decides in the store, with no cache.)
func newMemory(t *testing.T) storage.Store {
	t.Helper()
	store := memory.New()
	t.Cleanup(func() { _ = store.Close() })
	return struct{ storage.Store }{store}
}

// points is what one instrument reported: a value per attribute set,
// named by the set's encoding ("k1=v1,k2=v2").
type points map[string]int64

// metrics is what a reader collected, by instrument name.
type metrics struct {
	counters   map[string]points
	histograms map[string]points // counts
	all        map[string]metricdata.Metrics
}

func collect(t *testing.T, reader *sdkmetric.ManualReader) metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("Collect: %v", err)
	}
	got := metrics{counters: map[string]points{}, histograms: map[string]points{}, all: map[string]metricdata.Metrics{}}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != otelobserver.ScopeName {
			t.Errorf("scope %q, want %q", sm.Scope.Name, otelobserver.ScopeName)
		}
		for _, m := range sm.Metrics {
			got.all[m.Name] = m
			p := points{}
			switch data := m.Data.(type) {
			case metricdata.Sum[int64]:
				if !data.IsMonotonic {
					t.Errorf("%s is not monotonic", m.Name)
				}
				for _, dp := range data.DataPoints {
					p[encode(dp.Attributes)] = dp.Value
				}
				got.counters[m.Name] = p
			case metricdata.Histogram[float64]:
				for _, dp := range data.DataPoints {
					p[encode(dp.Attributes)] = int64(dp.Count)
				}
				got.histograms[m.Name] = p
			default:
				t.Errorf("%s: unexpected data %T", m.Name, m.Data)
			}
		}
	}
	return got
}

func encode(s attribute.Set) string { return s.Encoded(attribute.DefaultEncoder()) }

func set(kvs ...attribute.KeyValue) string { return encode(attribute.NewSet(kvs...)) }

// decision names the attribute set of a decision.
func decision(method, outcome string, cached, fallback bool, extra ...attribute.KeyValue) string {
	return set(append(extra,
		otelobserver.MethodKey.String(method), otelobserver.OutcomeKey.String(outcome),
		otelobserver.CachedKey.Bool(cached), otelobserver.FallbackKey.Bool(fallback))...)
}

// failure names the attribute set of an error.
func failure(method, errorType string) string {
	return set(otelobserver.MethodKey.String(method), otelobserver.ErrorTypeKey.String(errorType))
}

// check compares what one instrument reported with want, exactly: a
// missing instrument reads as no points.
func check(t *testing.T, name string, got, want points) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !maps.Equal(got, want) {
		t.Errorf("%s:\n got  %v\n want %v", name, got, want)
	}
}

// checkDecisions checks sluice.decisions and that the duration histogram
// counted the same decisions.
func checkDecisions(t *testing.T, got metrics, want points) {
	t.Helper()
	check(t, otelobserver.DecisionsName, got.counters[otelobserver.DecisionsName], want)
	check(t, otelobserver.DurationName+" (counts)", got.histograms[otelobserver.DurationName], want)
}

func TestDecisions(t *testing.T) {
	obs, reader := newObserver(t)
	lim, clock := newLimiter(t, newMemory(t), limiter.WithObserver(obs))
	ctx := context.Background()

	// Three allowed from the store, then two denials from the cache.
	for i := range 5 {
		d, err := lim.Allow(ctx, "a")
		if err != nil {
			t.Fatalf("step %d: Allow: %v", i, err)
		}
		if got, want := d.Allowed, i < 3; got != want {
			t.Fatalf("step %d: Allow = %v, want %v", i, got, want)
		}
	}
	if _, err := lim.Peek(ctx, "a"); err != nil {
		t.Fatalf("Peek: %v", err)
	}
	clock.Advance(20 * time.Second) // one token back
	if d, err := lim.Allow(ctx, "a"); err != nil || !d.Allowed {
		t.Fatalf("Allow after refill = %+v, %v; want allowed", d, err)
	}

	got := collect(t, reader)
	checkDecisions(t, got, points{
		decision("AllowN", "allowed", false, false): 4,
		decision("AllowN", "denied", true, false):   2,
		decision("Peek", "denied", false, false):    1,
	})
	check(t, otelobserver.ErrorsName, got.counters[otelobserver.ErrorsName], nil)

	for name, unit := range map[string]string{
		otelobserver.DecisionsName: "{decision}",
		otelobserver.DurationName:  "s",
	} {
		if m := got.all[name]; m.Unit != unit || m.Description == "" {
			t.Errorf("%s: unit %q, description %q; want unit %q and a description", name, m.Unit, m.Description, unit)
		}
	}
	hist := got.all[otelobserver.DurationName].Data.(metricdata.Histogram[float64])
	for _, dp := range hist.DataPoints {
		if len(dp.Bounds) == 0 || dp.Bounds[0] != 0.000001 || dp.Bounds[len(dp.Bounds)-1] != 5 {
			t.Errorf("duration bounds %v, want the advised 1µs to 5s", dp.Bounds)
		}
		if dp.Sum < 0 || dp.Sum > 60 {
			t.Errorf("duration sum %v s, want a plausible wall time", dp.Sum)
		}
	}
}

// Without a cache, denials come from the store.
func TestDecisionsUncached(t *testing.T) {
	obs, reader := newObserver(t)
	lim, _ := newLimiter(t, newMemory(t), limiter.WithObserver(obs), limiter.WithCacheSize(0))
	for range 4 {
		if _, err := lim.Allow(context.Background(), "a"); err != nil {
			t.Fatalf("Allow: %v", err)
		}
	}
	checkDecisions(t, collect(t, reader), points{
		decision("AllowN", "allowed", false, false): 3,
		decision("AllowN", "denied", false, false):  1,
	})
}

// A dry run reports the real decision.
func TestDryRun(t *testing.T) {
	obs, reader := newObserver(t)
	lim, _ := newLimiter(t, newMemory(t), limiter.WithObserver(obs), limiter.WithDryRun())
	for i := range 4 {
		d, err := lim.Allow(context.Background(), "a")
		if err != nil || !d.Allowed || d.DryRun != (i == 3) {
			t.Fatalf("step %d: Allow = %+v, %v; want allowed, DryRun %v", i, d, err, i == 3)
		}
	}
	checkDecisions(t, collect(t, reader), points{
		decision("AllowN", "allowed", false, false): 3,
		decision("AllowN", "denied", true, false):   1,
	})
}

func TestErrors(t *testing.T) {
	obs, reader := newObserver(t)
	store := faultstore.New(newMemory(t))
	lim, _ := newLimiter(t, store, limiter.WithObserver(obs))
	ctx := context.Background()

	fail := func(step string, f func() error) {
		t.Helper()
		if err := f(); err == nil {
			t.Fatalf("%s succeeded, want an error", step)
		}
	}
	store.FailAll(storage.ErrUnavailable)
	fail("Allow", func() error { _, err := lim.Allow(ctx, "a"); return err })
	fail("Peek", func() error { _, err := lim.Peek(ctx, "a"); return err })
	fail("Refund", func() error { return lim.Refund(ctx, "a", 1) })
	fail("Reset", func() error { return lim.Reset(ctx, "a") })

	// Each kind of error, as the store returns it, wrapped.
	for _, err := range []error{
		storage.ErrCorrupt,
		fmt.Errorf("redis: cas: %w: %w", storage.ErrUnavailable, context.DeadlineExceeded),
		fmt.Errorf("wrapped: %w", context.Canceled),
		context.DeadlineExceeded,
		errors.New("something else"),
	} {
		store.FailAll(err)
		fail(fmt.Sprintf("Allow failing with %v", err), func() error { _, err := lim.Allow(ctx, "a"); return err })
	}
	store.FailAll(nil)

	// Contention: one allowed call, then every compare-and-swap lost.
	if _, err := lim.Allow(ctx, "b"); err != nil {
		t.Fatalf("Allow: %v", err)
	}
	store.ConflictNext(1000)
	fail("Allow under contention", func() error { _, err := lim.Allow(ctx, "b"); return err })
	store.ConflictNext(0)

	_ = store.Close()
	fail("Allow after Close", func() error { _, err := lim.Allow(ctx, "a"); return err })

	got := collect(t, reader)
	check(t, otelobserver.ErrorsName, got.counters[otelobserver.ErrorsName], points{
		failure("AllowN", "unavailable"):       3, // the last: the limiter wraps a store's other errors
		failure("Peek", "unavailable"):         1,
		failure("Refund", "unavailable"):       1,
		failure("Reset", "unavailable"):        1,
		failure("AllowN", "corrupt"):           1,
		failure("AllowN", "canceled"):          1,
		failure("AllowN", "deadline_exceeded"): 1,
		failure("AllowN", "contention"):        1,
		failure("AllowN", "closed"):            1,
	})
	if m := got.all[otelobserver.ErrorsName]; m.Unit != "{error}" {
		t.Errorf("%s: unit %q, want {error}", otelobserver.ErrorsName, m.Unit)
	}
	checkDecisions(t, got, points{decision("AllowN", "allowed", false, false): 1})
}

// With a fallback, a store error is counted and the fallback's decision
// too, marked as such.
func TestFallback(t *testing.T) {
	obs, reader := newObserver(t)
	local, _ := newLimiter(t, newMemory(t))
	store := faultstore.New(newMemory(t))
	lim, _ := newLimiter(t, store, limiter.WithObserver(obs), limiter.WithFallback(local))
	store.FailAll(storage.ErrUnavailable)
	for i := range 4 {
		d, err := lim.Allow(context.Background(), "a")
		if err != nil || d.Allowed != (i < 3) {
			t.Fatalf("step %d: Allow = %+v, %v; want allowed %v", i, d, err, i < 3)
		}
	}
	got := collect(t, reader)
	checkDecisions(t, got, points{
		decision("AllowN", "allowed", false, true): 3,
		decision("AllowN", "denied", false, true):  1,
	})
	check(t, otelobserver.ErrorsName, got.counters[otelobserver.ErrorsName], points{failure("AllowN", "unavailable"): 4})
}

func TestWithAttributes(t *testing.T) {
	name := attribute.String("sluice.limiter.name", "login")
	obs, reader := newObserver(t,
		otelobserver.WithAttributes(attribute.String("sluice.limiter.name", "replaced")),
		otelobserver.WithAttributes(name))
	store := faultstore.New(newMemory(t))
	lim, _ := newLimiter(t, store, limiter.WithObserver(obs))
	if _, err := lim.Allow(context.Background(), "a"); err != nil {
		t.Fatalf("Allow: %v", err)
	}
	store.FailAll(storage.ErrUnavailable)
	if _, err := lim.Allow(context.Background(), "a"); err == nil {
		t.Fatal("Allow on a failing store succeeded")
	}
	got := collect(t, reader)
	checkDecisions(t, got, points{decision("AllowN", "allowed", false, false, name): 1})
	check(t, otelobserver.ErrorsName, got.counters[otelobserver.ErrorsName], points{
		set(name, otelobserver.MethodKey.String("AllowN"), otelobserver.ErrorTypeKey.String("unavailable")): 1,
	})
}

func TestNewErrors(t *testing.T) {
	mp := noop.NewMeterProvider()
	for _, tc := range []struct {
		name string
		mp   metric.MeterProvider
		opts []otelobserver.Option
		want error
	}{
		{"nil provider", nil, nil, otelobserver.ErrNilMeterProvider},
		{"empty key", mp, []otelobserver.Option{otelobserver.WithAttributes(attribute.String("", "x"))}, otelobserver.ErrInvalidAttribute},
		{"method key", mp, []otelobserver.Option{otelobserver.WithAttributes(otelobserver.MethodKey.String("x"))}, otelobserver.ErrInvalidAttribute},
		{"outcome key", mp, []otelobserver.Option{otelobserver.WithAttributes(otelobserver.OutcomeKey.String("allowed"))}, otelobserver.ErrInvalidAttribute},
		{"error.type", mp, []otelobserver.Option{otelobserver.WithAttributes(otelobserver.ErrorTypeKey.String("x"))}, otelobserver.ErrInvalidAttribute},
		{"instrument error", failingProvider{}, nil, errInstrument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obs, err := otelobserver.New(tc.mp, tc.opts...)
			if !errors.Is(err, tc.want) || obs != nil {
				t.Errorf("New = %v, %v; want nil, an error matching %v", obs, err, tc.want)
			}
		})
	}
	if _, err := otelobserver.New(mp, nil); err != nil {
		t.Errorf("New with a nil Option, which sets nothing: %v", err)
	}
}

var errInstrument = errors.New("instrument refused")

// failingProvider's meter refuses to create counters.
type failingProvider struct{ noop.MeterProvider }

func (failingProvider) Meter(string, ...metric.MeterOption) metric.Meter { return failingMeter{} }

type failingMeter struct{ noop.Meter }

func (failingMeter) Int64Counter(string, ...metric.Int64CounterOption) (metric.Int64Counter, error) {
	return nil, errInstrument
}

// events are what the benchmarks and the allocation test feed the
// Observer.
var (
	decisionEvent = limiter.Event{Method: "AllowN", Key: "user:42", Cost: 1,
		Decision: limiter.Decision{Allowed: true, Limit: 5, Remaining: 4}, Latency: 3 * time.Microsecond, StoreCalls: 1}
	errorEvent = limiter.Event{Method: "AllowN", Key: "user:42", Cost: 1,
		Err: fmt.Errorf("redis: cas: %w: %w", storage.ErrUnavailable, context.DeadlineExceeded), StoreCalls: 1}
)

// The Observer's own work allocates nothing: with the no-op API
// implementation, only its code runs.
func TestNoAllocations(t *testing.T) {
	obs, err := otelobserver.New(noop.NewMeterProvider())
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		obs.OnDecision(decisionEvent)
		obs.OnError(errorEvent)
	}); n != 0 {
		t.Errorf("OnDecision + OnError: %v allocations, want 0", n)
	}
}

func BenchmarkObserver(b *testing.B) {
	for _, p := range []struct {
		name string
		mp   func() metric.MeterProvider
	}{
		{"sdk", func() metric.MeterProvider {
			return sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		}},
		{"noop", func() metric.MeterProvider { return noop.NewMeterProvider() }},
	} {
		obs, err := otelobserver.New(p.mp())
		if err != nil {
			b.Fatal(err)
		}
		b.Run(p.name+"/OnDecision", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				obs.OnDecision(decisionEvent)
			}
		})
		b.Run(p.name+"/OnDecision/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					obs.OnDecision(decisionEvent)
				}
			})
		})
		b.Run(p.name+"/OnError", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				obs.OnError(errorEvent)
			}
		})
	}
}

// TestZeroObserverRecordsNothing: an Observer not made by New has no
// instruments; a limiter given one decides and fails as usual.
func TestZeroObserverRecordsNothing(t *testing.T) {
	mem := memory.New()
	defer mem.Close()
	fs := faultstore.New(mem)
	lim, err := limiter.New(fs, []limiter.Bucket{{Capacity: 1, Period: time.Hour}}, limiter.WithObserver(&otelobserver.Observer{}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if d, err := lim.Allow(ctx, "k"); err != nil || !d.Allowed {
		t.Errorf("Allow with a zero Observer: %+v, %v", d, err)
	}
	fs.FailAll(storage.ErrUnavailable)
	if _, err := lim.Allow(ctx, "other"); !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("Allow with a zero Observer and the store down: %v, want storage.ErrUnavailable", err)
	}
}
