// Package bench measures sluice against its peers, in one run, on the same
// machine and servers. It holds benchmarks only; the module has its own
// go.mod so that the peers never enter sluice's dependencies.
//
// # What is measured
//
// Every contender gets the same limit and the same keys:
//
//   - allowed decisions: a burst of 1e9 tokens per key, refilled over an
//     hour, so that every call is allowed and does the full work of a write
//     (with a small limit such as 1000 per second a hot key would be
//     exhausted within a millisecond and the run would measure denials);
//   - denials: one token per hour, taken before the timer starts, so that
//     every timed call is denied.
//
// The in-process table (BenchmarkMemory) runs one hot key sequentially and
// in parallel (GOMAXPROCS goroutines), 10,000 keys in parallel, and the
// denial of an exhausted key. The networked tables (BenchmarkRedis,
// BenchmarkPostgresLogged, BenchmarkPostgresUnlogged, BenchmarkBolt) run
// one hot key and 10,000 keys at 1, 16 and 64 goroutines, and the denial,
// and report decisions per second, the 50th and 99th percentile latency of
// one decision, and the round trips to the store per decision. The floors
// are the least a client can do per decision: a bare PING and EVALSHA of a
// trivial script on Redis, and EVALSHA of a script that reads its key and
// writes back a value of sluice's record size with a time to live (GETSET:
// what keeping state in one key costs the server at the least, deciding
// nothing); one INSERT ... ON CONFLICT DO UPDATE ... RETURNING on
// PostgreSQL; one db.Update per write on bbolt.
//
// Round trips are counted on the client: a go-redis hook counts commands
// and pipelines sent, and a wrapper of sluice's storage.Store counts the
// calls the limiter makes to PostgreSQL and bbolt (each is one statement or
// one queued write; a compare-and-swap that PostgreSQL loses while few are
// lost takes a second statement, which these single-process runs almost
// never meet). The server's own counters (INFO commandstats) would also
// count other clients of a shared server.
//
// # Running
//
// make bench runs every benchmark several times and prints one table per
// backend with each contender's throughput relative to sluice (medians of
// the runs); make bench-quick is a short look. The contenders of a case run
// one after the other, in reverse order in every other run
// (SLUICE_BENCH_ROUND=1, 3, ...), so that none always runs first, right
// after the previous case's heaviest load. Servers: SLUICE_REDIS_URL
// (default redis://127.0.0.1:6379/0) and SLUICE_POSTGRES_URL (default
// postgres://root@127.0.0.1:5432/test?sslmode=disable); a backend whose
// server does not answer is skipped with a line saying so. Keys and tables
// are unique to the run and removed afterwards; nothing else is touched.
//
// # Profiling
//
// Profile one contender in one case before claiming anything about it,
// for example the Redis hot key at 64 goroutines:
//
//	go test -c -o bench.test .
//	./bench.test -test.run '^$' -test.bench 'Redis/HotKey/goroutines=64/^sluice$' \
//		-test.benchtime 3s -test.cpuprofile cpu.pprof
//	go tool pprof -top bench.test cpu.pprof
package bench
