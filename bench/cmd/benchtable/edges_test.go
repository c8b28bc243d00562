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

// TestFormatBoundaries: a round million is 1.00M, a round thousand 1.00k,
// a round millisecond 1.00 ms.
func TestFormatBoundaries(t *testing.T) {
	for _, c := range []struct {
		f    func(float64) string
		in   float64
		want string
	}{
		{count, 1e6, "1.00M"}, {count, 1e3, "1.00k"}, {count, 999, "999"},
		{micros, 1000, "1.00 ms"}, {micros, 1, "1.00 µs"},
	} {
		if got := c.f(c.in); got != c.want {
			t.Errorf("format(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}
