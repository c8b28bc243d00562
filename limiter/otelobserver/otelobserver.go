package otelobserver

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/storage"
)

// ScopeName is the instrumentation scope (the meter name) under which
// every instrument is created: this package's import path.
const ScopeName = "github.com/sluice-go/sluice/limiter/otelobserver"

// Names of the instruments.
const (
	// DecisionsName counts decisions, unit "{decision}".
	DecisionsName = "sluice.decisions"
	// DurationName records how long each decision took, in seconds.
	DurationName = "sluice.decision.duration"
	// ErrorsName counts failed calls, unit "{error}".
	ErrorsName = "sluice.errors"
)

// Attribute keys set by the Observer. WithAttributes refuses them.
const (
	// MethodKey is the Limiter method: "AllowN" (also for Allow and each
	// try of Wait), "Peek", "Refund", "Reset", or "_OTHER".
	MethodKey = attribute.Key("sluice.method")
	// OutcomeKey is "allowed" or "denied": the real decision, also under
	// limiter.WithDryRun.
	OutcomeKey = attribute.Key("sluice.outcome")
	// CachedKey is true for a denial served from the limiter's cache,
	// with no store call.
	CachedKey = attribute.Key("sluice.cached")
	// FallbackKey is true for a decision of the fallback limiter, made
	// because the store failed.
	FallbackKey = attribute.Key("sluice.fallback")
	// ErrorTypeKey is the OpenTelemetry "error.type" attribute of
	// sluice.errors; see the package documentation for its values.
	ErrorTypeKey = attribute.Key("error.type")
)

// ErrNilMeterProvider is returned by New when the meter provider is nil.
var ErrNilMeterProvider = errors.New("otelobserver: nil meter provider")

// ErrInvalidAttribute is returned by New when an attribute given with
// WithAttributes has an empty key, or a key the Observer sets itself.
var ErrInvalidAttribute = errors.New("otelobserver: invalid attribute")

// durationBounds are the advised histogram bucket boundaries, in seconds:
// from a microsecond (memory store, cached denials) to seconds (a store
// that is struggling).
var durationBounds = []float64{
	0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005,
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
	0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
}

// methods are the values of MethodKey; the last one stands for any other.
var methods = [...]string{"AllowN", "Peek", "Refund", "Reset", "_OTHER"}

// errorTypes are the values of ErrorTypeKey, in the order errors are
// matched: the storage sentinels first, since a driver may wrap a timeout
// as its native cause. The last one, with no target, stands for any other.
var errorTypes = [...]struct {
	name   string
	target error
}{
	{"closed", storage.ErrClosed},
	{"corrupt", storage.ErrCorrupt},
	{"contention", limiter.ErrContention},
	{"unavailable", storage.ErrUnavailable},
	{"canceled", context.Canceled},
	{"deadline_exceeded", context.DeadlineExceeded},
	{"_OTHER", nil},
}

// Option configures an Observer in New.
type Option func(*config)

type config struct {
	attrs []attribute.KeyValue
}

// WithAttributes adds attributes to every measurement, typically the
// limiter's name (attribute.String("sluice.limiter.name", "login")) to
// tell several limiters apart when they share one meter provider. Later
// calls add to earlier ones; of two attributes with the same key, the last
// wins. The default is none. An attribute with an empty key, or with a
// key the Observer sets itself (MethodKey, OutcomeKey,
// CachedKey, FallbackKey, ErrorTypeKey), makes New fail.
//
// Never pass the limited key (a user id, an IP address) as an attribute:
// every distinct value starts a new time series in the SDK and the
// backend, which then grow without bound, and keys may identify people.
func WithAttributes(attrs ...attribute.KeyValue) Option {
	return func(c *config) { c.attrs = append(c.attrs, attrs...) }
}

// measure holds the prebuilt options of one attribute set, so that a
// measurement allocates nothing for them.
type measure struct {
	add    []metric.AddOption
	record []metric.RecordOption
}

func newMeasure(kvs []attribute.KeyValue) measure {
	// NewSet sorts its argument in place: give it a copy.
	opt := metric.WithAttributeSet(attribute.NewSet(slices.Clone(kvs)...))
	return measure{add: []metric.AddOption{opt}, record: []metric.RecordOption{opt}}
}

// Observer is a limiter.Observer that records OpenTelemetry metrics; see
// the package documentation for the instruments and their attributes.
// Make one with New, per limiter, or share one between limiters that need
// not be told apart; the zero Observer has no instruments and records
// nothing. An Observer is safe for concurrent use.
type Observer struct {
	decisions metric.Int64Counter
	duration  metric.Float64Histogram
	errors    metric.Int64Counter

	// byDecision is indexed by method, allowed, cached, fallback.
	byDecision [len(methods)][2][2][2]measure
	// byError is indexed by method and error type.
	byError [len(methods)][len(errorTypes)]measure
}

var _ limiter.Observer = (*Observer)(nil)

// New returns an Observer that creates its instruments with a meter of
// mp named ScopeName. A nil mp is an error rather than a silent choice of
// the global provider: pass otel.GetMeterProvider() to use that one.
// Errors from creating the instruments are returned wrapped.
func New(mp metric.MeterProvider, opts ...Option) (*Observer, error) {
	if mp == nil {
		return nil, ErrNilMeterProvider
	}
	var cfg config
	for _, opt := range opts {
		if opt != nil { // a nil Option sets nothing
			opt(&cfg)
		}
	}
	for _, kv := range cfg.attrs {
		switch {
		case !kv.Valid():
			return nil, fmt.Errorf("%w: empty key with value %q", ErrInvalidAttribute, kv.Value.String())
		case kv.Key == MethodKey, kv.Key == OutcomeKey, kv.Key == CachedKey, kv.Key == FallbackKey, kv.Key == ErrorTypeKey:
			return nil, fmt.Errorf("%w: key %q is set by the observer", ErrInvalidAttribute, kv.Key)
		}
	}

	meter := mp.Meter(ScopeName)
	o := &Observer{}
	var err error
	if o.decisions, err = meter.Int64Counter(DecisionsName,
		metric.WithDescription("Rate-limit decisions, by method and outcome."),
		metric.WithUnit("{decision}")); err != nil {
		return nil, fmt.Errorf("otelobserver: create %s: %w", DecisionsName, err)
	}
	if o.duration, err = meter.Float64Histogram(DurationName,
		metric.WithDescription("Time taken to reach a rate-limit decision, store calls included."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(durationBounds...)); err != nil {
		return nil, fmt.Errorf("otelobserver: create %s: %w", DurationName, err)
	}
	if o.errors, err = meter.Int64Counter(ErrorsName,
		metric.WithDescription("Rate-limiter calls that failed, by method and error type."),
		metric.WithUnit("{error}")); err != nil {
		return nil, fmt.Errorf("otelobserver: create %s: %w", ErrorsName, err)
	}

	n := len(cfg.attrs)
	for m, method := range methods {
		kvs := append(cfg.attrs[:n:n], MethodKey.String(method), OutcomeKey.String(""), CachedKey.Bool(false), FallbackKey.Bool(false))
		for allowed := range 2 {
			kvs[n+1] = OutcomeKey.String(outcome(allowed == 1))
			for cached := range 2 {
				kvs[n+2] = CachedKey.Bool(cached == 1)
				for fallback := range 2 {
					kvs[n+3] = FallbackKey.Bool(fallback == 1)
					o.byDecision[m][allowed][cached][fallback] = newMeasure(kvs)
				}
			}
		}
		for t, typ := range errorTypes {
			o.byError[m][t] = newMeasure(append(cfg.attrs[:n:n], MethodKey.String(method), ErrorTypeKey.String(typ.name)))
		}
	}
	return o, nil
}

// OnDecision counts the decision and records its latency, allocating
// nothing itself. It implements limiter.Observer.
func (o *Observer) OnDecision(e limiter.Event) {
	if o.decisions == nil {
		return // not made by New
	}
	m := &o.byDecision[methodIndex(e.Method)][b2i(e.Decision.Allowed)][b2i(e.Cached)][b2i(e.Fallback)]
	ctx := context.Background()
	o.decisions.Add(ctx, 1, m.add...)
	o.duration.Record(ctx, e.Latency.Seconds(), m.record...)
}

// OnError counts the failed call. It implements limiter.Observer.
func (o *Observer) OnError(e limiter.Event) {
	if o.errors == nil {
		return // not made by New
	}
	o.errors.Add(context.Background(), 1, o.byError[methodIndex(e.Method)][errorIndex(e.Err)].add...)
}

func outcome(allowed bool) string {
	if allowed {
		return "allowed"
	}
	return "denied"
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func methodIndex(method string) int {
	for i, m := range methods[:len(methods)-1] {
		if m == method {
			return i
		}
	}
	return len(methods) - 1
}

// errorIndex classifies err into errorTypes.
func errorIndex(err error) int {
	for i, typ := range errorTypes[:len(errorTypes)-1] {
		if errors.Is(err, typ.target) {
			return i
		}
	}
	return len(errorTypes) - 1
}
