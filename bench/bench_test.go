package bench

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/storage"
)

// limit is a token bucket every contender is configured with: tokens per
// period, burst tokens.
type limit struct {
	tokens int64
	period time.Duration
}

var (
	// allowLimit is so large that every call in a run is allowed: the
	// burst alone outlasts any run. (go-limiter refills a whole window at
	// once, interval/tokens tokens after the first, so a higher rate would
	// not help it; the rate here does not matter to anyone.)
	allowLimit = limit{tokens: 1_000_000_000, period: time.Hour}
	// denyLimit is exhausted by one call and refills after an hour.
	denyLimit = limit{tokens: 1, period: time.Hour}
)

// spreadKeys is how many keys the spread benchmarks cycle through.
const spreadKeys = 10_000

// keys holds the spread benchmarks' keys, made once and checked distinct.
var keys = func() []string {
	ks := make([]string, spreadKeys)
	seen := make(map[string]bool, spreadKeys)
	for i := range ks {
		ks[i] = fmt.Sprintf("user:%d", i)
		seen[ks[i]] = true
	}
	if len(seen) != spreadKeys {
		panic("bench: spread keys are not distinct")
	}
	return ks
}()

func hotKey(w, i int) string    { return "hot" }
func spreadKey(w, i int) string { return keys[(w*7919+i)%len(keys)] }

// runID makes every key and table of one run unique, so runs never see
// each other's state and cleanup removes only what this run made.
var runID = fmt.Sprintf("sluicebench%d_%d", time.Now().Unix()%1_000_000, os.Getpid())

// decideFunc makes one decision on key and reports whether it was allowed.
type decideFunc func(ctx context.Context, key string) (bool, error)

// A contender is one library, or one floor, under test.
type contender struct {
	name string
	// floor marks a bare store operation that knows no limit: it is not
	// run for denials.
	floor bool
	// setup prepares the contender for lim under namespace ns (unique to
	// the benchmark) and returns its decision function and a counter of
	// its round trips to the store (nil when not counted). Cleanups go
	// to env.cleanup.
	setup func(env *env, ns string, lim limit) (decideFunc, func() int64, error)
}

// env is what the contenders of one top-level benchmark share: the source
// of namespaces, and the cleanups of the case being run, which run when
// the case ends (after every call the testing package made to it).
type env struct {
	seq      atomic.Int64
	cleanups []func()
}

func newEnv(*testing.B) *env { return &env{} }

// cleanup registers f to run when the current case ends.
func (e *env) cleanup(f func()) { e.cleanups = append(e.cleanups, f) }

// endCase runs the cleanups of the case that ended, last first.
func (e *env) endCase() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
	e.cleanups = e.cleanups[:0]
}

// namespace returns a name unique to this run and call, usable as a key
// prefix and as an SQL identifier.
func (e *env) namespace(name string) string {
	clean := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, strings.ToLower(name))
	return fmt.Sprintf("%s_%d_%s", runID, e.seq.Add(1), clean)
}

// benchCase is one workload: how many goroutines, which keys, which limit.
type benchCase struct {
	name       string
	goroutines int // 1: sequential; 0: one per GOMAXPROCS
	key        func(w, i int) string
	deny       bool
	latency    bool
}

// inProcessCases are the in-process workloads.
var inProcessCases = []benchCase{
	{name: "HotKey/sequential", goroutines: 1, key: hotKey},
	{name: "HotKey/parallel", key: hotKey},
	{name: fmt.Sprintf("Keys%d/parallel", spreadKeys), key: spreadKey},
	{name: "DenyExhausted/sequential", goroutines: 1, key: hotKey, deny: true},
}

// networkCases are the workloads of the backends behind a network or a
// disk: one hot key and spreadKeys keys at 1, 16 and 64 goroutines, and
// the denial of an exhausted key, all with latencies.
var networkCases = func() []benchCase {
	var cs []benchCase
	for _, k := range []struct {
		name string
		key  func(w, i int) string
	}{{"HotKey", hotKey}, {fmt.Sprintf("Keys%d", spreadKeys), spreadKey}} {
		for _, g := range []int{1, 16, 64} {
			cs = append(cs, benchCase{name: fmt.Sprintf("%s/goroutines=%d", k.name, g), goroutines: g, key: k.key, latency: true})
		}
	}
	for _, g := range []int{1, 64} {
		cs = append(cs, benchCase{name: fmt.Sprintf("DenyExhausted/goroutines=%d", g), goroutines: g, key: hotKey, deny: true, latency: true})
	}
	return cs
}()

// runCases runs every case for every contender, the contenders of one case
// one after the other so that they meet the same conditions. A contender
// is set up once per case and reused across the calls the testing package
// makes while it sizes b.N. In odd rounds (see round) the contenders of a
// case run in reverse order, so that over several runs none always runs
// first, right after the previous case's heaviest load, or always last.
func runCases(b *testing.B, e *env, cases []benchCase, contenders []contender) {
	if round()%2 == 1 {
		contenders = slices.Clone(contenders)
		slices.Reverse(contenders)
	}
	for _, c := range cases {
		for _, ct := range contenders {
			if c.deny && ct.floor {
				continue
			}
			var (
				decide decideFunc
				trips  func() int64
			)
			b.Run(c.name+"/"+ct.name, func(b *testing.B) {
				if decide == nil {
					lim := allowLimit
					if c.deny {
						lim = denyLimit
					}
					var err error
					decide, trips, err = ct.setup(e, e.namespace(ct.name), lim)
					if err != nil {
						b.Fatalf("%s: setup: %v", ct.name, err)
					}
					if c.deny {
						if ok, err := decide(context.Background(), c.key(0, 0)); err != nil || !ok {
							b.Fatalf("%s: first call on the key to exhaust: allowed %v, error %v", ct.name, ok, err)
						}
					}
				}
				measure(b, c, ct.name == "sluice", decide, trips)
			})
			e.endCase()
		}
	}
}

// round is the number of this run among several (SLUICE_BENCH_ROUND, set
// by make bench; 0 when unset or not a number).
func round() int {
	n, err := strconv.Atoi(os.Getenv("SLUICE_BENCH_ROUND"))
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// measure calls decide b.N times in all from c.goroutines goroutines and
// reports decisions per second, the p50 and p99 latency (when c.latency)
// and round trips per decision (when trips is not nil). Every decision
// must be allowed, or every one denied when c.deny: anything else would
// compare different work. An error fails the benchmark for sluice and
// skips it, with the error, for a peer.
func measure(b *testing.B, c benchCase, sluice bool, decide decideFunc, trips func() int64) {
	ctx := context.Background()
	procs := runtime.GOMAXPROCS(0)
	parallelism := 1
	workers := 1
	if c.goroutines != 1 {
		parallelism = max(1, (c.goroutines+procs-1)/procs)
		workers = parallelism * procs
	}
	var hists []histogram
	if c.latency {
		hists = make([]histogram, workers)
	}
	var (
		wrong    atomic.Int64 // decisions with the unexpected outcome
		failOnce sync.Once
		failErr  error
	)
	fail := func(err error) { failOnce.Do(func() { failErr = err }) }
	want := !c.deny
	var before int64
	if trips != nil {
		before = trips()
	}
	// work is one goroutine's loop; worker w records its latencies into
	// hists[w].
	work := func(w int, more func() bool) {
		var h *histogram
		if c.latency && w < len(hists) {
			h = &hists[w]
		}
		for i := 0; more(); i++ {
			var start time.Time
			if h != nil {
				start = time.Now()
			}
			ok, err := decide(ctx, c.key(w, i))
			if h != nil {
				h.record(time.Since(start))
			}
			if err != nil {
				fail(err)
				return
			}
			if ok != want {
				wrong.Add(1)
			}
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	if c.goroutines == 1 {
		n := 0
		work(0, func() bool { n++; return n <= b.N })
	} else {
		b.SetParallelism(parallelism)
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) { work(int(next.Add(1))-1, pb.Next) })
	}
	b.StopTimer()
	if failErr != nil {
		if !sluice {
			// A peer that gives up (throttled after too many lost
			// compare-and-swaps on a hot key) is a finding, not a broken
			// run: the table says so.
			b.Skipf("gave up: %v", failErr)
		}
		b.Fatal(failErr)
	}
	if n := wrong.Load(); n > 0 {
		b.Fatalf("%d of %d decisions were not %s: the contenders would not do the same work", n, b.N, map[bool]string{true: "allowed", false: "denied"}[want])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
	if c.latency {
		var all histogram
		for i := range hists {
			all.merge(&hists[i])
		}
		b.ReportMetric(float64(all.quantile(0.50))/1e3, "p50-us")
		b.ReportMetric(float64(all.quantile(0.99))/1e3, "p99-us")
	}
	if trips != nil {
		b.ReportMetric(float64(trips()-before)/float64(b.N), "roundtrips/op")
	}
}

// sluiceContender returns the contender for sluice over the store that
// open returns (opened once per case).
func sluiceContender(name string, open func(e *env, ns string) (storage.Store, error)) contender {
	return sluiceWith(name, open, true)
}

// sluiceUnnamed is sluiceContender for a store of its own, made fresh for
// each case: the limiter is made without WithName, as in the README's
// first example, so its keys are "1000/1s:"+key rather than the run's
// long namespace (which only keeps runs apart on shared servers, and costs
// an in-process decision a longer key to copy, hash and compare).
func sluiceUnnamed(name string, open func(e *env, ns string) (storage.Store, error)) contender {
	return sluiceWith(name, open, false)
}

// sluiceWith is sluiceContender and sluiceUnnamed: with named, the limiter
// is made WithName(ns).
//
// It is kept out of line on purpose. Inlined into its callers, it gives
// each of them a copy of the decide closure in which Go 1.26 leaves
// limiter.(*Limiter).Allow as a call (and copies the returned Decision
// through memory, 4-5 ns per decision on the in-process path), while in a
// program's own function, as in the README's examples, Allow is inlined.
//
//go:noinline
func sluiceWith(name string, open func(e *env, ns string) (storage.Store, error), named bool) contender {
	return contender{name: name, setup: func(e *env, ns string, lim limit) (decideFunc, func() int64, error) {
		store, err := open(e, ns)
		if err != nil {
			return nil, nil, err
		}
		var opts []limiter.Option
		if named {
			opts = append(opts, limiter.WithName(ns))
		}
		lim2, err := limiter.New(store, []limiter.Bucket{{Capacity: lim.tokens, Period: lim.period}}, opts...)
		if err != nil {
			return nil, nil, err
		}
		var trips func() int64
		if cs, ok := store.(*countingStore); ok {
			trips = cs.calls.Load
		}
		return func(ctx context.Context, key string) (bool, error) {
			d, err := lim2.Allow(ctx, key)
			return d.Allowed, err
		}, trips, nil
	}}
}

// countingStore counts the calls a limiter makes to its store; each one is
// a round trip (one statement, one queued write), but for a compare-and-swap
// that PostgreSQL loses while few are lost, which takes two statements (the
// single-process runs here almost never lose one).
type countingStore struct {
	storage.Store
	calls atomic.Int64
}

func (s *countingStore) Get(ctx context.Context, key string) (storage.Record, error) {
	s.calls.Add(1)
	return s.Store.Get(ctx, key)
}

func (s *countingStore) CompareAndSwap(ctx context.Context, key string, expected uint64, value []byte, ttl time.Duration) (storage.Record, bool, error) {
	s.calls.Add(1)
	return s.Store.CompareAndSwap(ctx, key, expected, value, ttl)
}

func (s *countingStore) Delete(ctx context.Context, key string) error {
	s.calls.Add(1)
	return s.Store.Delete(ctx, key)
}

// floorValue is what the floors write per decision: the size of a sluice
// record for one bucket.
var floorValue = []byte("0123456789abcdefghij")

// skipUnavailable skips b with a sentence naming the backend, where, and
// why. The sentence also goes to standard output, where go test prints a
// skipped benchmark's reason only with -test.v.
func skipUnavailable(b *testing.B, backend, where, env string, err error) {
	msg := fmt.Sprintf("%s: skipped, no server answers at %s (set %s): %v", backend, where, env, err)
	if !testing.Verbose() {
		fmt.Printf("--- SKIP: %s\n    %s\n", b.Name(), msg)
	}
	b.Skip(msg)
}

func TestCountingStoreCounts(t *testing.T) {
	s := &countingStore{Store: nopStore{}}
	ctx := context.Background()
	s.Get(ctx, "k")
	s.CompareAndSwap(ctx, "k", 0, nil, time.Second)
	s.Delete(ctx, "k")
	if got, want := s.calls.Load(), int64(3); got != want {
		t.Fatalf("calls = %d, want %d", got, want)
	}
}

func TestNamespaceIsUniqueAndPlain(t *testing.T) {
	e := &env{}
	a, b := e.namespace("Sluice-unlogged"), e.namespace("Sluice-unlogged")
	if a == b {
		t.Fatalf("namespace twice = %q both times", a)
	}
	for _, r := range a {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			t.Fatalf("namespace %q holds %q, not usable as an SQL identifier", a, r)
		}
	}
	if len(a) > 63 {
		t.Fatalf("namespace %q is longer than an SQL identifier may be", a)
	}
}

type nopStore struct{}

func (nopStore) Get(context.Context, string) (storage.Record, error) { return storage.Record{}, nil }
func (nopStore) CompareAndSwap(context.Context, string, uint64, []byte, time.Duration) (storage.Record, bool, error) {
	return storage.Record{}, false, nil
}
func (nopStore) Delete(context.Context, string) error { return nil }
func (nopStore) Close() error                         { return nil }
