package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
)

// A target is one goal of sluice against a peer or a floor, checked on the
// medians of a run.
type target struct {
	backend, cas string
	what         string
	// check returns the figure the goal is about, formatted, and whether
	// it is met; ok is false when the figures are missing.
	check func(get func(contender, unit string) float64) (figure string, met, ok bool)
}

// throughputAtLeast is the goal "sluice's decisions per second are at
// least factor times the contender's".
func throughputAtLeast(contender string, factor float64) func(func(string, string) float64) (string, bool, bool) {
	return func(get func(string, string) float64) (string, bool, bool) {
		r := get("sluice", "decisions/s") / get(contender, "decisions/s")
		if math.IsNaN(r) || math.IsInf(r, 0) {
			return "", false, false
		}
		return fmt.Sprintf("sluice ÷ %s = %s (want ≥ %s)", contender, fixed3(r), fixed3(factor)), r >= factor, true
	}
}

// latencyWithin is the goal "sluice's p50 is at most factor times the
// contender's".
func latencyWithin(contender string, factor float64) func(func(string, string) float64) (string, bool, bool) {
	return func(get func(string, string) float64) (string, bool, bool) {
		r := get("sluice", "p50-us") / get(contender, "p50-us")
		if math.IsNaN(r) || math.IsInf(r, 0) {
			return "", false, false
		}
		return fmt.Sprintf("p50 sluice ÷ %s = %s (want ≤ %s)", contender, fixed3(r), fixed3(factor)), r <= factor, true
	}
}

// sluiceAtMost is the goal "sluice's figure in unit is at most limit".
func sluiceAtMost(unit string, limit float64) func(func(string, string) float64) (string, bool, bool) {
	return func(get func(string, string) float64) (string, bool, bool) {
		v := get("sluice", unit)
		if math.IsNaN(v) {
			return "", false, false
		}
		return fmt.Sprintf("sluice %s = %s (want ≤ %s)", unit, strconv.FormatFloat(v, 'g', 4, 64), strconv.FormatFloat(limit, 'g', 4, 64)), v <= limit, true
	}
}

func fixed3(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }

// targets are the goals of the peer comparison (issue 8).
var targets = func() []target {
	ts := []target{
		{"Memory", "HotKey/sequential", "memory: hot key sequential faster than go-limiter", throughputAtLeast("go-limiter", 1)},
		{"Memory", "Keys10000/parallel", "memory: 10,000 keys parallel faster than x/time/rate", throughputAtLeast("x-time-rate", 1)},
		{"Memory", "HotKey/parallel", "memory: hot key parallel faster than x/time/rate", throughputAtLeast("x-time-rate", 1)},
	}
	for _, cas := range []string{"HotKey/sequential", "HotKey/parallel", "Keys10000/parallel", "DenyExhausted/sequential"} {
		ts = append(ts, target{"Memory", cas, "memory: 0 allocations per decision, " + caseLabel(cas), sluiceAtMost("allocs/op", 0)})
	}
	ts = append(ts,
		target{"Redis", "Keys10000/goroutines=64", "Redis: 64 goroutines over 10,000 keys at least the EVALSHA floor", throughputAtLeast("floor-EVALSHA", 1)},
		target{"Redis", "HotKey/goroutines=64", "Redis: hot key at 64 goroutines at least 3x redis_rate", throughputAtLeast("redis_rate", 3)},
		target{"Redis", "HotKey/goroutines=1", "Redis: sequential latency within 1.2x of EVALSHA, hot key", latencyWithin("floor-EVALSHA", 1.2)},
		target{"Redis", "Keys10000/goroutines=1", "Redis: sequential latency within 1.2x of EVALSHA, 10,000 keys", latencyWithin("floor-EVALSHA", 1.2)},
		// The limiter reads an exhausted key's record once a second, so
		// that a Reset made elsewhere is seen (limiter's cacheTrust): a
		// few reads in a run of millions of denials.
		target{"Redis", "DenyExhausted/goroutines=1", "Redis: denial of an exhausted key without a round trip (but one read a second), 1 goroutine", sluiceAtMost("roundtrips/op", 0.001)},
		target{"Redis", "DenyExhausted/goroutines=64", "Redis: denial of an exhausted key without a round trip (but one read a second), 64 goroutines", sluiceAtMost("roundtrips/op", 0.001)},
	)
	for _, pg := range []struct{ backend, label string }{{"PostgresLogged", "logged"}, {"PostgresUnlogged", "UNLOGGED"}} {
		ts = append(ts,
			target{pg.backend, "Keys10000/goroutines=64", "PostgreSQL (" + pg.label + "): 64 goroutines over 10,000 keys at least 80% of the upsert floor", throughputAtLeast("floor-upsert", 0.8)},
			target{pg.backend, "HotKey/goroutines=64", "PostgreSQL (" + pg.label + "): hot key (64 goroutines) at least 5x the upsert floor", throughputAtLeast("floor-upsert", 5)},
		)
	}
	for _, cas := range []string{"HotKey", "Keys10000"} {
		ts = append(ts,
			target{"Bolt", cas + "/goroutines=64", "bbolt: 64 goroutines at least 10x the Update-per-write floor, " + caseLabel(cas), throughputAtLeast("floor-Update", 10)},
			target{"Bolt", cas + "/goroutines=1", "bbolt: 1 goroutine no slower than the Update-per-write floor, " + caseLabel(cas), throughputAtLeast("floor-Update", 1)},
		)
	}
	return ts
}()

// writeTargets prints each target as met, NOT met, or not measured.
func writeTargets(w io.Writer, res *results) {
	fmt.Fprintln(w, "\n### Targets")
	fmt.Fprintln(w)
	for _, t := range targets {
		get := func(contender, unit string) float64 {
			tb := res.byName[t.backend]
			if tb == nil || tb.index[t.cas] == nil || tb.index[t.cas][contender] == nil {
				return math.NaN()
			}
			return median(tb.index[t.cas][contender].samples[unit])
		}
		figure, met, ok := t.check(get)
		switch {
		case !ok:
			fmt.Fprintf(w, "- not measured: %s\n", t.what)
		case met:
			fmt.Fprintf(w, "- met: %s — %s\n", t.what, figure)
		default:
			fmt.Fprintf(w, "- NOT met: %s — %s\n", t.what, figure)
		}
	}
}
