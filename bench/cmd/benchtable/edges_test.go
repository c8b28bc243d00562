package main

import (
	"strings"
	"testing"
)

// TestTargetsNotMeasured: a figure that is missing, or a contender that
// made no decision at all, leaves its target not measured rather than met
// or NOT met.
func TestTargetsNotMeasured(t *testing.T) {
	in := `BenchmarkMemory/HotKey/sequential/sluice-2 	 100	 50 ns/op	 20000000 decisions/s
BenchmarkBolt/HotKey/goroutines=1/sluice-2 	 100	 1 ns/op	 500 decisions/s
BenchmarkBolt/HotKey/goroutines=1/floor-Update-2 	 100	 1 ns/op	 0 decisions/s
`
	text := targetsText(t, in)
	wantAll(t, text, []string{
		"- not measured: memory: 0 allocations per decision, hot key, sequential\n", // no allocs/op figure
		"- not measured: bbolt: 1 goroutine no slower than the Update-per-write floor, hot key\n",
	})
	if strings.Contains(text, "NaN") || strings.Contains(text, "Inf") {
		t.Errorf("output shows a figure that is not a number:\n%s", text)
	}
}

// TestRatioOfZero: a contender with no decisions gets no ratio rather
// than an infinite one.
func TestRatioOfZero(t *testing.T) {
	ref := &row{contender: "sluice", samples: map[string][]float64{"decisions/s": {500}}}
	zero := &row{contender: "x", samples: map[string][]float64{"decisions/s": {0}}}
	if got := ratio(ref, zero); got != "" {
		t.Errorf("ratio to a contender with 0 decisions/s = %q, want empty", got)
	}
}

// TestFormatBoundaries: a figure takes the unit and precision of its
// value rounded to three digits: a round million is 1.00M, 999,999 too,
// and 999.6 decisions/s are 1.00k.
func TestFormatBoundaries(t *testing.T) {
	for _, c := range []struct {
		name string
		f    func(float64) string
		in   float64
		want string
	}{
		{"count", count, 1e6, "1.00M"}, {"count", count, 999_999, "1.00M"}, {"count", count, 1e3, "1.00k"},
		{"count", count, 999.6, "1.00k"}, {"count", count, 999, "999"}, {"count", count, 99.96, "100"},
		{"count", count, 9.996, "10.0"}, {"count", count, 0, "0.00"},
		{"micros", micros, 1000, "1.00 ms"}, {"micros", micros, 999.7, "1.00 ms"}, {"micros", micros, 1, "1.00 µs"},
		{"micros", micros, 0.9996, "1.00 µs"}, {"micros", micros, 0.202, "202 ns"},
		{"sig3", sig3, 0.5, "0.50"}, {"sig3", sig3, 12.34, "12.3"},
	} {
		if got := c.f(c.in); got != c.want {
			t.Errorf("%s(%v) = %q, want %q", c.name, c.in, got, c.want)
		}
	}
}
