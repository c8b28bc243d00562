package main

import (
	"bytes"
	"strings"
	"testing"
)

const sample = `goos: linux
goarch: amd64
pkg: github.com/sluice-go/sluice/bench
cpu: AMD EPYC
BenchmarkMemory/HotKey/sequential/sluice-2         	   83209	      50 ns/op	    20000000 decisions/s	       0 B/op	       0 allocs/op
BenchmarkMemory/HotKey/sequential/x-time-rate-2    	 1000000	      100 ns/op	   10000000 decisions/s	       0 B/op	       0 allocs/op
BenchmarkRedis/HotKey/goroutines=16/sluice-2        	    9106	     14995 ns/op	     60000 decisions/s	       178.2 p50-us	      1327 p99-us	         0.1239 roundtrips/op	     342 B/op	       4 allocs/op
BenchmarkRedis/HotKey/goroutines=16/throttled-2     	--- SKIP: BenchmarkRedis/HotKey/goroutines=16/throttled
    bench_test.go:263: gave up: Failed to store updated rate limit data for key hot after 10 attempts
BenchmarkRedis/HotKey/goroutines=16/redis_rate-2    	    2348	     42819 ns/op	     20000 decisions/s	       405.5 p50-us	      4096 p99-us	         1.000 roundtrips/op	     744 B/op	      23 allocs/op
--- SKIP: BenchmarkPostgresLogged
    postgres_test.go:50: PostgreSQL: skipped, no server answers at postgres://x (set SLUICE_POSTGRES_URL): refused
PASS
goos: linux
cpu: AMD EPYC
BenchmarkMemory/HotKey/sequential/sluice-2         	   83209	      70 ns/op	    14000000 decisions/s	       0 B/op	       0 allocs/op
BenchmarkMemory/HotKey/sequential/x-time-rate-2    	 1000000	      120 ns/op	   8000000 decisions/s	       0 B/op	       0 allocs/op
BenchmarkMemory/HotKey/sequential/sluice-2         	   83209	      60 ns/op	    16000000 decisions/s	       0 B/op	       1 allocs/op
BenchmarkMemory/HotKey/sequential/x-time-rate-2    	 1000000	      110 ns/op	   9000000 decisions/s	       0 B/op	       0 allocs/op
BenchmarkRedis/HotKey/goroutines=16/throttled-2     	       0	               NaN ns/op	       0 B/op	       0 allocs/op
--- BENCH: BenchmarkRedis/HotKey/goroutines=16/throttled-2
    bench_test.go:263: gave up: Failed to store updated rate limit data for key hot after 10 attempts
`

func TestParseAndMedians(t *testing.T) {
	res, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := res.runs, 3; got != want {
		t.Errorf("runs = %d, want %d", got, want)
	}
	if got, want := res.procs, 2; got != want {
		t.Errorf("procs = %d, want %d", got, want)
	}
	mem := res.byName["Memory"]
	if mem == nil {
		t.Fatal("no Memory table")
	}
	rw := mem.index["HotKey/sequential"]["sluice"]
	if got, want := median(rw.samples["ns/op"]), 60.0; got != want {
		t.Errorf("median ns/op = %v, want %v", got, want)
	}
	if got, want := median([]float64{4, 1, 3, 2}), 2.5; got != want {
		t.Errorf("median of an even count = %v, want %v", got, want)
	}
	if got, want := ratio(rw, mem.index["HotKey/sequential"]["x-time-rate"]), "1.78"; got != want {
		t.Errorf("ratio = %s, want %s (16M / 9M)", got, want)
	}
	if got, want := res.notes["Redis"], []string{"HotKey goroutines=16 throttled: gave up: Failed to store updated rate limit data for key hot after 10 attempts"}; len(got) != 1 || got[0] != want[0] {
		t.Errorf("Redis notes = %q, want %q (once)", got, want)
	}
	if got := res.notes["PostgresLogged"]; len(got) != 1 || !strings.HasPrefix(got[0], "PostgreSQL: skipped") {
		t.Errorf("PostgresLogged notes = %q, want the skip line", got)
	}
}

func TestWrite(t *testing.T) {
	res, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	write(&out, res, "2026-11-27", 2)
	text := out.String()
	wantAll(t, text, []string{
		"Measured 2026-11-27 on one machine: 2 cores (AMD EPYC), GOMAXPROCS=2; each figure is the median of 3 runs.",
		"### In process (sluice on storage/memory)",
		"| case | contender | decisions/s | sluice ÷ it | ns/decision | allocs/decision |",
		"| hot key, sequential | **sluice** | 16.0M | 1.00 | 60.0 | 0 |",
		"|  | x-time-rate | 9.00M | 1.78 | 110 | 0 |",
		"### Redis",
		"| case | contender | decisions/s | sluice ÷ it | p50 | p99 | round trips/decision | allocs/decision |",
		"| hot key, 16 goroutines | **sluice** | 60.0k | 1.00 | 178 µs | 1.33 ms | 0.12 | 4 |",
		"|  | redis_rate | 20.0k | 3.00 | 406 µs | 4.10 ms | 1.00 | 23 |",
		"- HotKey goroutines=16 throttled: gave up:",
		"|  | throttled | see below |  | | | | |",
		"### PostgreSQL, logged tables\n\n- PostgreSQL: skipped, no server answers",
	})
	if strings.Count(text, "ns/decision") != 1 {
		t.Errorf("ns/decision shown in a table with latencies; output:\n%s", text)
	}
}

func TestLabelsAndFormats(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"HotKey/goroutines=1", "hot key, 1 goroutine"},
		{"Keys10000/goroutines=64", "10000 keys, 64 goroutines"},
		{"DenyExhausted/sequential", "denial, exhausted key, sequential"},
	} {
		if got := caseLabel(c.in); got != c.want {
			t.Errorf("caseLabel(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	for _, c := range []struct {
		f    func(float64) string
		in   float64
		want string
	}{
		{count, 950, "950"}, {count, 12345, "12.3k"}, {count, 4561000, "4.56M"},
		{micros, 0.182, "182 ns"}, {micros, 36.35, "36.4 µs"}, {micros, 47710, "47.7 ms"},
	} {
		if got := c.f(c.in); got != c.want {
			t.Errorf("format(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestSkippedBackendsInOrder(t *testing.T) {
	in := "--- SKIP: BenchmarkPostgresLogged\n    PostgreSQL: skipped, no server\n" +
		"--- SKIP: BenchmarkRedis\n    Redis: skipped, no server\nPASS\n"
	res, err := parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	write(&out, res, "2026-11-27", 2)
	text := out.String()
	r, p := strings.Index(text, "### Redis\n\n- Redis: skipped"), strings.Index(text, "### PostgreSQL, logged tables\n\n- PostgreSQL: skipped")
	if r < 0 || p < 0 || r > p {
		t.Errorf("want the Redis skip, then the PostgreSQL one; output:\n%s", text)
	}
	if strings.Contains(text, "median of 0") {
		t.Errorf("output speaks of medians of no run:\n%s", text)
	}
}

// wantAll fails t for each of wants that text lacks.
func wantAll(t *testing.T, text string, wants []string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q; output:\n%s", want, text)
		}
	}
}
