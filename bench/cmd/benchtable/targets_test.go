package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestTargets(t *testing.T) {
	in := `BenchmarkMemory/HotKey/sequential/sluice-2 	 100	 50 ns/op	 20000000 decisions/s	 0 B/op	 0 allocs/op
BenchmarkMemory/HotKey/sequential/go-limiter-2 	 100	 40 ns/op	 25000000 decisions/s	 0 B/op	 0 allocs/op
BenchmarkMemory/HotKey/parallel/sluice-2 	 100	 50 ns/op	 20000000 decisions/s	 0 B/op	 1 allocs/op
BenchmarkRedis/HotKey/goroutines=64/sluice-2 	 100	 1 ns/op	 90000 decisions/s	 300 p50-us	 900 p99-us	 0.03 roundtrips/op	 0 B/op	 2 allocs/op
BenchmarkRedis/HotKey/goroutines=64/redis_rate-2 	 100	 1 ns/op	 30000 decisions/s	 300 p50-us	 900 p99-us	 1 roundtrips/op	 0 B/op	 2 allocs/op
BenchmarkRedis/HotKey/goroutines=1/sluice-2 	 100	 1 ns/op	 9000 decisions/s	 60 p50-us	 900 p99-us	 1 roundtrips/op	 0 B/op	 2 allocs/op
BenchmarkRedis/HotKey/goroutines=1/floor-EVALSHA-2 	 100	 1 ns/op	 9000 decisions/s	 50 p50-us	 900 p99-us	 1 roundtrips/op	 0 B/op	 2 allocs/op
BenchmarkRedis/DenyExhausted/goroutines=1/sluice-2 	 100	 1 ns/op	 9000000 decisions/s	 0.2 p50-us	 0.3 p99-us	 0 roundtrips/op	 0 B/op	 0 allocs/op
`
	text := targetsText(t, in)
	wantAll(t, text, []string{
		"- NOT met: memory: hot key sequential faster than go-limiter — sluice ÷ go-limiter = 0.800 (want ≥ 1.000)",
		"- met: memory: 0 allocations per decision, hot key, sequential — sluice allocs/op = 0 (want ≤ 0)",
		"- NOT met: memory: 0 allocations per decision, hot key, parallel — sluice allocs/op = 1 (want ≤ 0)",
		"- met: Redis: hot key at 64 goroutines at least 3x redis_rate — sluice ÷ redis_rate = 3.000 (want ≥ 3.000)",
		"- met: Redis: sequential latency within 1.2x of EVALSHA, hot key — p50 sluice ÷ floor-EVALSHA = 1.200 (want ≤ 1.200)",
		"- met: Redis: denial of an exhausted key without a round trip (but one read a second), 1 goroutine — sluice roundtrips/op = 0 (want ≤ 0.001)",
		"- not measured: memory: 10,000 keys parallel faster than x/time/rate",
		"- not measured: bbolt: 64 goroutines at least 10x the Update-per-write floor, hot key",
	})
}

// targetsText parses benchmark output in and returns its targets section.
func targetsText(t *testing.T, in string) string {
	t.Helper()
	res, err := parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	writeTargets(&out, res)
	return out.String()
}
