package otelobserver_test

import (
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/limiter/otelobserver"
)

// TestDurationInSeconds: sluice.decision.duration records each decision's
// Latency in seconds, as its unit "s" says, with sub-millisecond precision.
func TestDurationInSeconds(t *testing.T) {
	obs, reader := newObserver(t)
	obs.OnDecision(limiter.Event{Method: "AllowN", Decision: limiter.Decision{Allowed: true}, Latency: 2500 * time.Microsecond})
	obs.OnDecision(limiter.Event{Method: "AllowN", Decision: limiter.Decision{Allowed: true}, Latency: 500 * time.Microsecond})
	got := collect(t, reader)
	m := got.all[otelobserver.DurationName]
	if m.Unit != "s" {
		t.Errorf("%s: unit %q, want s", otelobserver.DurationName, m.Unit)
	}
	h, ok := m.Data.(metricdata.Histogram[float64])
	if !ok || len(h.DataPoints) != 1 {
		t.Fatalf("%s: %+v, want one histogram point", otelobserver.DurationName, m.Data)
	}
	if dp := h.DataPoints[0]; dp.Count != 2 || dp.Sum < 0.0029999 || dp.Sum > 0.0030001 {
		t.Errorf("%s: count %d, sum %v; want 2 and 0.003 (2.5ms + 0.5ms in seconds)", otelobserver.DurationName, dp.Count, dp.Sum)
	}
}
