package otelobserver_test

import (
	"context"
	"fmt"
	"log"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/limiter/otelobserver"
	"github.com/sluice-go/sluice/storage/memory"
)

// A login limiter of 3 per minute reports its decisions. The manual
// reader stands in for the exporter a real program would configure (a
// periodic reader with OTLP, or Prometheus), so that the example can print
// what was recorded.
func Example() {
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer provider.Shutdown(ctx)

	obs, err := otelobserver.New(provider,
		otelobserver.WithAttributes(attribute.String("sluice.limiter.name", "login")))
	if err != nil {
		log.Fatal(err)
	}
	store := memory.New()
	defer store.Close()
	lim, err := limiter.New(store, []limiter.Bucket{{Capacity: 3, Period: time.Minute}},
		limiter.WithName("login"), limiter.WithObserver(obs))
	if err != nil {
		log.Fatal(err)
	}
	for range 5 {
		if _, err := lim.Allow(ctx, "alice"); err != nil {
			log.Fatal(err)
		}
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		log.Fatal(err)
	}
	var lines []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch data := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range data.DataPoints {
					lines = append(lines, fmt.Sprintf("%s{%s} %d", m.Name, dp.Attributes.Encoded(attribute.DefaultEncoder()), dp.Value))
				}
			case metricdata.Histogram[float64]:
				for _, dp := range data.DataPoints {
					lines = append(lines, fmt.Sprintf("%s{%s} count %d", m.Name, dp.Attributes.Encoded(attribute.DefaultEncoder()), dp.Count))
				}
			}
		}
	}
	slices.Sort(lines) // data points come in no set order
	for _, line := range lines {
		fmt.Println(line)
	}
	// Output:
	// sluice.decision.duration{sluice.cached=false,sluice.fallback=false,sluice.limiter.name=login,sluice.method=AllowN,sluice.outcome=allowed} count 3
	// sluice.decision.duration{sluice.cached=false,sluice.fallback=false,sluice.limiter.name=login,sluice.method=AllowN,sluice.outcome=denied} count 2
	// sluice.decisions{sluice.cached=false,sluice.fallback=false,sluice.limiter.name=login,sluice.method=AllowN,sluice.outcome=allowed} 3
	// sluice.decisions{sluice.cached=false,sluice.fallback=false,sluice.limiter.name=login,sluice.method=AllowN,sluice.outcome=denied} 2
}
