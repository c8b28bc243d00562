package memory_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-go/sluice/conformance"
	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/memory"
)

// stores memoises newStore: one *memory.Store per test.
var stores sync.Map // testing.TB -> *memory.Store

// newStore returns a fresh Store for tb on its first call and the same one
// on later calls with the same tb, and closes it when tb ends.
func newStore(tb testing.TB) storage.Store {
	if s, ok := stores.Load(tb); ok {
		return s.(*memory.Store)
	}
	s := memory.New()
	stores.Store(tb, s)
	tb.Cleanup(func() {
		stores.Delete(tb)
		s.Close()
	})
	return s
}

func TestConformance(t *testing.T) {
	conformance.RunStore(t, newStore)
	conformance.RunLimiter(t, newStore)
}

// BenchmarkConformance also shows the factory that takes nothing, which
// RunBenchmarks accepts as RunStore and RunLimiter do.
func BenchmarkConformance(b *testing.B) {
	conformance.RunBenchmarks(b, func() storage.Store { return memory.New() })
}

// What follows is special to the memory driver.

func TestNewStoreIsMemoisedPerTest(t *testing.T) {
	a, b := newStore(t), newStore(t)
	if a != b {
		t.Fatal("two calls with one tb returned different stores")
	}
	var other storage.Store
	t.Run("sub", func(t *testing.T) { other = newStore(t) })
	if other == a {
		t.Fatal("a subtest got its parent's store")
	}
}

const longTTL = time.Hour

func mustSwap(t testing.TB, s *memory.Store, key string, expected uint64, value string, ttl time.Duration) storage.Record {
	t.Helper()
	rec, ok, err := s.CompareAndSwap(context.Background(), key, expected, []byte(value), ttl)
	if err != nil || !ok {
		t.Fatalf("CompareAndSwap(%q, %d, %q) = %v, %v; want a swap", key, expected, value, ok, err)
	}
	return rec
}

// waitFor polls cond until it holds or the bound passes.
func waitFor(t *testing.T, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", bound, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// WithShards is accepted and ignored, nil options too.
func TestWithShardsIgnored(t *testing.T) {
	s := memory.New(memory.WithShards(1), nil, memory.WithShards(-1))
	defer s.Close()
	a := mustSwap(t, s, "a", 0, "1", longTTL)
	mustSwap(t, s, "b", 0, "2", longTTL)
	if got, _ := s.Get(context.Background(), "a"); got.Version != a.Version || string(got.Value) != "1" {
		t.Fatalf("Get(a) = %+v, want %+v", got, a)
	}
}

// Versions of a key grow across Delete, expiry and the janitor's sweep,
// also when other keys were written meanwhile.
func TestVersionsGrowAcrossRemoval(t *testing.T) {
	s := memory.New(memory.WithSweepInterval(5 * time.Millisecond))
	defer s.Close()
	ctx := context.Background()
	var last uint64
	for round := range 20 {
		rec := mustSwap(t, s, "k", 0, "v", 10*time.Millisecond)
		if rec.Version <= last {
			t.Fatalf("round %d: version %d after %d", round, rec.Version, last)
		}
		last = rec.Version
		for i := range round {
			mustSwap(t, s, "other"+strconv.Itoa(round)+"-"+strconv.Itoa(i), 0, "x", time.Millisecond)
		}
		switch round % 3 {
		case 0:
			s.Delete(ctx, "k")
		case 1:
			time.Sleep(15 * time.Millisecond) // expired, maybe swept
		default:
			for s.Len() > 0 { // swept
				time.Sleep(time.Millisecond)
			}
		}
	}
}

func TestWithSweepInterval(t *testing.T) {
	for _, c := range []struct{ d, want time.Duration }{
		{-time.Second, time.Second}, {0, time.Second}, {time.Nanosecond, time.Nanosecond}, {5 * time.Millisecond, 5 * time.Millisecond}, {time.Hour, time.Hour},
	} {
		s := memory.New(memory.WithSweepInterval(c.d))
		if got := memory.SweepInterval(s); got != c.want {
			t.Errorf("WithSweepInterval(%v): interval %v, want %v", c.d, got, c.want)
		}
		s.Close()
	}
}

// An expired record reads as absent before the janitor removes it, and a
// swap on it with expected 0 reuses the slot.
func TestExpiredIsAbsentBeforeSweep(t *testing.T) {
	s := memory.New(memory.WithSweepInterval(time.Hour))
	defer s.Close()
	ctx := context.Background()
	old := mustSwap(t, s, "k", 0, "v", 20*time.Millisecond)
	waitFor(t, 5*time.Second, "the record never expired", func() bool {
		rec, err := s.Get(ctx, "k")
		return err == nil && rec.Version == 0
	})
	if n := s.Len(); n != 1 {
		t.Fatalf("Len() = %d before any sweep, want 1 (the expired record)", n)
	}
	if rec, ok, err := s.CompareAndSwap(ctx, "k", old.Version, []byte("w"), longTTL); err != nil || ok || rec.Version != 0 {
		t.Fatalf("swap on the expired version = %+v, %v, %v; want a conflict with the absent record", rec, ok, err)
	}
	rec := mustSwap(t, s, "k", 0, "w", longTTL)
	if rec.Version <= old.Version {
		t.Fatalf("version after expiry %d, want above %d", rec.Version, old.Version)
	}
	if n := s.Len(); n != 1 {
		t.Fatalf("Len() = %d, want 1", n)
	}
}

func TestJanitorRemovesExpired(t *testing.T) {
	s := memory.New(memory.WithSweepInterval(10*time.Millisecond), memory.WithShards(4))
	defer s.Close()
	for i := range 3000 {
		mustSwap(t, s, "short:"+strconv.Itoa(i), 0, "v", 30*time.Millisecond)
	}
	for i := range 10 {
		mustSwap(t, s, "long:"+strconv.Itoa(i), 0, "v", longTTL)
	}
	waitFor(t, 5*time.Second, "expired records were not swept", func() bool { return s.Len() == 10 })
	for i := range 10 {
		if rec, err := s.Get(context.Background(), "long:"+strconv.Itoa(i)); err != nil || rec.Version == 0 {
			t.Fatalf("long-lived record %d: %+v, %v", i, rec, err)
		}
	}
}

// TestMillionKeysMemoryBounded touches a million keys once each with a
// short time to live (fewer under the race detector, which is slow) and
// requires that the janitor then removes them all and that the heap shrinks
// back near where it started: Go maps never shrink, so this holds only
// because the janitor rebuilds maps that have emptied.
func TestMillionKeysMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("fills the store with many keys; skipped with -short")
	}
	keys := 1_000_000
	if raceEnabled {
		keys = 200_000
	}
	const ttl = 2 * time.Second
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := int64(ms.HeapInuse)

	s := memory.New(memory.WithSweepInterval(100 * time.Millisecond))
	defer s.Close()
	ctx := context.Background()
	value := make([]byte, 32)
	buf := make([]byte, 0, 32)
	start := time.Now()
	for i := range keys {
		buf = strconv.AppendInt(append(buf[:0], "key:"...), int64(i), 10)
		if _, ok, err := s.CompareAndSwap(ctx, string(buf), 0, value, ttl); err != nil || !ok {
			t.Fatalf("insert %d: %v, %v", i, ok, err)
		}
	}
	filled := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&ms)
	peak := int64(ms.HeapInuse) - base
	t.Logf("%d keys written in %v; %d held; heap grew by %d KiB", keys, filled.Round(time.Millisecond), s.Len(), peak>>10)

	waitFor(t, ttl+10*time.Second, "the janitor left records behind", func() bool { return s.Len() == 0 })
	runtime.GC()
	runtime.ReadMemStats(&ms)
	after := int64(ms.HeapInuse) - base
	t.Logf("empty %v after the first write; heap now %d KiB above the start", time.Since(start).Round(time.Millisecond), after>>10)
	// An index kept at its peak size would hold some sixty bytes per key;
	// allow an eighth of that plus 2 MiB for the noise of the heap.
	if limit := int64(keys)*8 + 2<<20; after > limit {
		t.Fatalf("heap is %d KiB above the start after every record was swept, want below %d KiB", after>>10, limit>>10)
	}
	if peak < int64(keys)*32 {
		t.Logf("note: the peak was low (%d KiB): the janitor swept during the writes", peak>>10)
	}
}

func TestCloseStopsJanitor(t *testing.T) {
	before := runtime.NumGoroutine()
	s := memory.New(memory.WithSweepInterval(time.Millisecond))
	mustSwap(t, s, "k", 0, "v", longTTL)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatalf("Close again: %v", err)
	}
	// The janitor has finished its work when Close returns, but its
	// goroutine may take a moment to exit.
	waitFor(t, 5*time.Second, "the janitor still runs after Close", func() bool {
		return runtime.NumGoroutine() <= before
	})
	ctx := context.Background()
	if _, err := s.Get(ctx, "k"); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
	if _, ok, err := s.CompareAndSwap(ctx, "k", 0, nil, longTTL); !errors.Is(err, storage.ErrClosed) || ok {
		t.Fatalf("CompareAndSwap after Close: %v, %v", ok, err)
	}
	if err := s.Delete(ctx, "k"); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("Delete after Close: %v", err)
	}
	if n := s.Len(); n != 0 {
		t.Fatalf("Len() after Close = %d, want 0", n)
	}
}

func TestDroppedStoreStopsJanitor(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		s := memory.New(memory.WithSweepInterval(time.Millisecond))
		mustSwap(t, s, "k", 0, "v", longTTL)
	}()
	waitFor(t, 5*time.Second, "the janitor of an unreachable store still runs", func() bool {
		runtime.GC()
		return runtime.NumGoroutine() <= before
	})
}

// TestAllocations pins the allocation budget of the hot paths: none for
// Get and for a conflicting swap, one (the copy of the value) for a
// successful swap.
func TestAllocations(t *testing.T) {
	s, rec := withHotKey(t)
	ctx := context.Background()
	value := []byte(hotValue)
	for _, c := range []struct {
		name string
		want float64
		f    func()
	}{
		{"Get", 0, func() { s.Get(ctx, "hot") }},
		{"Get absent", 0, func() { s.Get(ctx, "cold") }},
		{"CompareAndSwap conflict", 0, func() { s.CompareAndSwap(ctx, "hot", 0, value, longTTL) }},
		{"CompareAndSwap swap", 1, func() { rec, _, _ = s.CompareAndSwap(ctx, "hot", rec.Version, value, longTTL) }},
		{"Delete", 0, func() { s.Delete(ctx, "cold") }},
	} {
		if got := testing.AllocsPerRun(100, c.f); got != c.want {
			t.Errorf("%s: %v allocations per call, want %v", c.name, got, c.want)
		}
	}
}

// TestConcurrentWithJanitor increments counters from many goroutines while
// the janitor sweeps as often as it can and short-lived keys come and go;
// run with -race. The long-lived keys make each sweep release and retake
// the shard locks several times, so writes land in the middle of sweeps.
func TestConcurrentWithJanitor(t *testing.T) {
	s := memory.New(memory.WithSweepInterval(time.Millisecond), memory.WithShards(2))
	defer s.Close()
	ctx := context.Background()
	const long = 4000
	for i := range long {
		mustSwap(t, s, "long:"+strconv.Itoa(i), 0, "v", longTTL)
	}
	const goroutines, each = 8, 300
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				mustSwap(t, s, "tmp:"+strconv.Itoa(g)+":"+strconv.Itoa(i), 0, "x", time.Millisecond)
				for {
					rec, err := s.Get(ctx, "counter")
					if err != nil {
						t.Error(err)
						return
					}
					n := 0
					if rec.Version != 0 {
						n, _ = strconv.Atoi(string(rec.Value))
					}
					if _, ok, err := s.CompareAndSwap(ctx, "counter", rec.Version, []byte(strconv.Itoa(n+1)), longTTL); err != nil {
						t.Error(err)
						return
					} else if ok {
						break
					}
				}
			}
		})
	}
	wg.Wait()
	rec, err := s.Get(ctx, "counter")
	if err != nil || string(rec.Value) != strconv.Itoa(goroutines*each) {
		t.Fatalf("counter = %q, %v; want %d", rec.Value, err, goroutines*each)
	}
	for i := range long {
		if rec, err := s.Get(ctx, "long:"+strconv.Itoa(i)); err != nil || rec.Version == 0 {
			t.Fatalf("long-lived key %d lost: %+v, %v", i, rec, err)
		}
	}
	waitFor(t, 5*time.Second, "short-lived keys were not swept", func() bool { return s.Len() == long+1 })
}

// hotValue is about the size of a limiter record.
const hotValue = "0123456789abcdef0123456789abcdef"

// withHotKey returns a store holding hotValue under "hot", closed when tb
// ends, and the record written.
func withHotKey(tb testing.TB) (*memory.Store, storage.Record) {
	s := memory.New()
	tb.Cleanup(func() { s.Close() })
	return s, mustSwap(tb, s, "hot", 0, hotValue, longTTL)
}

func BenchmarkGet(b *testing.B) {
	s, _ := withHotKey(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		s.Get(ctx, "hot")
	}
}

func BenchmarkCompareAndSwap(b *testing.B) {
	s, rec := withHotKey(b)
	ctx := context.Background()
	value := []byte(hotValue)
	b.ReportAllocs()
	for b.Loop() {
		rec, _, _ = s.CompareAndSwap(ctx, "hot", rec.Version, value, longTTL)
	}
}

func BenchmarkCompareAndSwapParallel(b *testing.B) {
	s, _ := withHotKey(b)
	ctx := context.Background()
	value := []byte(hotValue)
	b.ReportAllocs()
	var id sync.Mutex
	next := 0
	b.RunParallel(func(pb *testing.PB) {
		id.Lock()
		key := "key:" + strconv.Itoa(next)
		next++
		id.Unlock()
		var version uint64
		for pb.Next() {
			rec, _, _ := s.CompareAndSwap(ctx, key, version, value, longTTL)
			version = rec.Version
		}
	})
}

// commit holds prefix+key and commits value.
func commit(t *testing.T, s *memory.Store, prefix, key, value string, ttl time.Duration) uint64 {
	t.Helper()
	h, now, err := s.Hold(context.Background(), prefix, key)
	if err != nil {
		t.Fatalf("Hold(%q, %q): %v", prefix, key, err)
	}
	return h.Commit(append(h.Buffer(), value...), now+int64(ttl))
}

// TestHoldNeverChangesHandedOutValues: Commit reuses a value's memory only
// while no Get or CompareAndSwap has handed it out.
func TestHoldNeverChangesHandedOutValues(t *testing.T) {
	s := memory.New()
	defer s.Close()
	ctx := context.Background()
	v1 := commit(t, s, "p:", "k", "first", time.Hour)
	rec, err := s.Get(ctx, "p:k")
	if err != nil || string(rec.Value) != "first" || rec.Version != v1 {
		t.Fatalf("Get = %q v%d, %v; want first v%d", rec.Value, rec.Version, err, v1)
	}
	v2 := commit(t, s, "p:", "k", "again", time.Hour)
	if v2 <= v1 {
		t.Fatalf("versions %d then %d", v1, v2)
	}
	if string(rec.Value) != "first" {
		t.Errorf("a value handed out by Get changed to %q", rec.Value)
	}
	cur, ok, err := s.CompareAndSwap(ctx, "p:k", v1, []byte("stale"), time.Hour)
	if err != nil || ok || cur.Version != v2 || string(cur.Value) != "again" {
		t.Fatalf("stale swap: %+v, %v; want conflict with v%d again", cur, err, v2)
	}
	commit(t, s, "p:", "k", "third", time.Hour)
	if string(cur.Value) != "again" {
		t.Errorf("a value handed out on conflict changed to %q", cur.Value)
	}
}

// TestHold: a hold sees what the Store methods wrote under the whole key,
// and they see its commits; Release writes nothing; versions grow.
func TestHold(t *testing.T) {
	s := memory.New()
	defer s.Close()
	ctx := context.Background()
	h, _, err := s.Hold(ctx, "ns:", "user")
	if err != nil {
		t.Fatal(err)
	}
	if rec := h.Record(); rec.Version != 0 || rec.Value != nil {
		t.Errorf("absent key held as %+v", rec)
	}
	h.Release()
	if rec, _ := s.Get(ctx, "ns:user"); rec.Version != 0 {
		t.Fatalf("Release wrote %+v", rec)
	}

	rec, ok, err := s.CompareAndSwap(ctx, "ns:user", 0, []byte("v1"), time.Hour)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	// Any split of the same key is the same record.
	for _, split := range [][2]string{{"ns:", "user"}, {"", "ns:user"}, {"ns:user", ""}, {"n", "s:user"}} {
		h, _, err := s.Hold(ctx, split[0], split[1])
		if err != nil {
			t.Fatal(err)
		}
		if got := h.Record(); got.Version != rec.Version || string(got.Value) != "v1" {
			t.Errorf("Hold(%q, %q) = %+v, want v%d v1", split[0], split[1], got, rec.Version)
		}
		h.Release()
	}
	v := commit(t, s, "ns:", "user", "v2", time.Hour)
	if v <= rec.Version {
		t.Errorf("Commit gave version %d after %d", v, rec.Version)
	}
	if got, _ := s.Get(ctx, "ns:user"); got.Version != v || string(got.Value) != "v2" {
		t.Errorf("Get after Commit = %+v, want v%d v2", got, v)
	}
	if _, ok, _ := s.CompareAndSwap(ctx, "ns:user", rec.Version, []byte("x"), time.Hour); ok {
		t.Error("a compare-and-swap on the version before the commit succeeded")
	}

	// Keys longer than any internal buffer work the same.
	long := strings.Repeat("k", 3000)
	commit(t, s, "ns:", long, "long", time.Hour)
	if got, _ := s.Get(ctx, "ns:"+long); string(got.Value) != "long" {
		t.Errorf("long key: %+v", got)
	}
}

// TestHoldExpiry: a committed record expires after its ttl on the store's
// clock, and Now is the wall clock give or take the time since New.
func TestHoldExpiry(t *testing.T) {
	s := memory.New()
	defer s.Close()
	ctx := context.Background()
	before := time.Now().UnixNano()
	h, now, err := s.Hold(ctx, "", "k")
	if err != nil {
		t.Fatal(err)
	}
	h.Commit([]byte("v"), now+int64(20*time.Millisecond))
	after := time.Now().UnixNano()
	if now < before-int64(time.Second) || now > after+int64(time.Second) {
		t.Errorf("Now = %d, outside [%d, %d] by more than a second", now, before, after)
	}
	time.Sleep(40 * time.Millisecond)
	h, later, _ := s.Hold(ctx, "", "k")
	if rec := h.Record(); rec.Version != 0 {
		t.Errorf("expired record held as %+v", rec)
	}
	if later <= now {
		t.Errorf("the hold's time went from %d to %d", now, later)
	}
	h.Release()
	if rec, _ := s.Get(ctx, "k"); rec.Version != 0 {
		t.Errorf("expired record read as %+v", rec)
	}
}

// TestHoldErrors: a done context and a closed store hold nothing.
func TestHoldErrors(t *testing.T) {
	s := memory.New()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := s.Hold(ctx, "p:", "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("Hold with a cancelled context: %v", err)
	}
	s.Close()
	if _, _, err := s.Hold(context.Background(), "p:", "k"); !errors.Is(err, storage.ErrClosed) || !strings.Contains(err.Error(), `"p:k"`) {
		t.Errorf("Hold after Close: %v, want storage.ErrClosed naming the key", err)
	}
}

// TestHoldConcurrent: holds exclude each other, so read-increment-commit
// under a hold loses no update.
func TestHoldConcurrent(t *testing.T) {
	s := memory.New(memory.WithShards(2))
	defer s.Close()
	ctx := context.Background()
	const goroutines, each = 16, 500
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				key := "k" + strconv.Itoa((g+i)%3)
				h, now, err := s.Hold(ctx, "c:", key)
				if err != nil {
					t.Error(err)
					return
				}
				n := 0
				if rec := h.Record(); rec.Version != 0 {
					n, _ = strconv.Atoi(string(rec.Value))
				}
				h.Commit(strconv.AppendInt(h.Buffer(), int64(n+1), 10), now+int64(time.Hour))
			}
		}()
	}
	wg.Wait()
	total := 0
	for i := range 3 {
		rec, _ := s.Get(ctx, "c:k"+strconv.Itoa(i))
		n, _ := strconv.Atoi(string(rec.Value))
		total += n
	}
	if total != goroutines*each {
		t.Errorf("counted %d increments, want %d", total, goroutines*each)
	}
}

// TestHoldAllocations: once a key exists, a hold and commit allocate
// nothing.
func TestHoldAllocations(t *testing.T) {
	s := memory.New()
	defer s.Close()
	ctx := context.Background()
	commit(t, s, "prefix:", "key", "value", time.Hour)
	allocs := testing.AllocsPerRun(1000, func() {
		h, now, _ := s.Hold(ctx, "prefix:", "key")
		h.Commit(append(h.Buffer(), "value"...), now+int64(time.Hour))
	})
	if allocs != 0 {
		t.Errorf("%v allocations per hold and commit, want 0", allocs)
	}
	// A value too long to be kept inline (a limiter of two buckets) is
	// built in its own memory after the first commit.
	long := strings.Repeat("v", 45)
	commit(t, s, "prefix:", "long", long, time.Hour)
	allocs = testing.AllocsPerRun(1000, func() {
		h, now, _ := s.Hold(ctx, "prefix:", "long")
		h.Commit(append(h.Buffer(), long...), now+int64(time.Hour))
	})
	if allocs != 0 {
		t.Errorf("%v allocations per hold and commit of a %d-byte value, want 0", allocs, len(long))
	}
	if rec, _ := s.Get(ctx, "prefix:long"); string(rec.Value) != long || cap(rec.Value) != len(long) {
		t.Errorf("Get = %q (capacity %d), want %q with no spare capacity", rec.Value, cap(rec.Value), long)
	}
	// The Get above handed the value out: the next commit copies it to
	// memory of the entry's own, and the commits after build there again.
	commit(t, s, "prefix:", "long", long, time.Hour)
	allocs = testing.AllocsPerRun(1000, func() {
		h, now, _ := s.Hold(ctx, "prefix:", "long")
		h.Commit(append(h.Buffer(), long...), now+int64(time.Hour))
	})
	if allocs != 0 {
		t.Errorf("%v allocations per hold and commit after a Get, want 0", allocs)
	}
	// The longest key built on the stack: 128 bytes with the prefix.
	key := strings.Repeat("k", 128-len("prefix:"))
	commit(t, s, "prefix:", key, "value", time.Hour)
	allocs = testing.AllocsPerRun(1000, func() {
		h, now, _ := s.Hold(ctx, "prefix:", key)
		h.Commit(append(h.Buffer(), "value"...), now+int64(time.Hour))
	})
	if allocs != 0 {
		t.Errorf("%v allocations per hold and commit of a 128-byte key, want 0", allocs)
	}
}

// TestHandedOutValuesUnderChurn mixes holds, Gets and compare-and-swaps
// with values of every size around the inline limit: every value handed
// out keeps its bytes, and every read sees the last write.
func TestHandedOutValuesUnderChurn(t *testing.T) {
	s := memory.New()
	defer s.Close()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	type handed struct{ got, want []byte }
	var out []handed
	var last []byte
	for i := range 20_000 {
		n := 1 + rng.IntN(48)
		value := bytes.Repeat([]byte{byte('a' + i%26)}, n)
		switch rng.IntN(4) {
		case 0, 1:
			h, now, err := s.Hold(ctx, "p:", "k")
			if err != nil {
				t.Fatal(err)
			}
			if rec := h.Record(); !bytes.Equal(rec.Value, last) {
				t.Fatalf("step %d: hold reads %q, want %q", i, rec.Value, last)
			}
			h.Commit(append(h.Buffer(), value...), now+int64(time.Hour))
			last = value
		case 2:
			rec, err := s.Get(ctx, "p:k")
			if err != nil || !bytes.Equal(rec.Value, last) {
				t.Fatalf("step %d: Get = %q, %v; want %q", i, rec.Value, err, last)
			}
			out = append(out, handed{rec.Value, bytes.Clone(rec.Value)})
		case 3:
			rec, err := s.Get(ctx, "p:k")
			if err != nil {
				t.Fatal(err)
			}
			cur, ok, err := s.CompareAndSwap(ctx, "p:k", rec.Version, value, time.Hour)
			if err != nil || !ok {
				t.Fatalf("step %d: swap: %v %v", i, ok, err)
			}
			out = append(out, handed{cur.Value, bytes.Clone(value)})
			last = value
		}
	}
	for i, h := range out {
		if !bytes.Equal(h.got, h.want) {
			t.Fatalf("value %d handed out as %q is now %q", i, h.want, h.got)
		}
	}
}

// TestCloseDropsWritesInFlight: writes that began before Close, on keys
// new to the store, leave no record behind once Close and they have
// returned: Close drops every record, including theirs.
func TestCloseDropsWritesInFlight(t *testing.T) {
	ctx := context.Background()
	for round := range 50 {
		s := memory.New()
		var wg sync.WaitGroup
		started := make(chan struct{}, 8)
		for g := range 8 {
			wg.Go(func() {
				for i := 0; ; i++ {
					if i == 10 {
						started <- struct{}{}
					}
					key := strconv.Itoa(g) + ":" + strconv.Itoa(i)
					var err error
					if i%2 == 0 {
						_, _, err = s.CompareAndSwap(ctx, key, 0, []byte("v"), time.Minute)
					} else {
						var h storage.Held
						if h, _, err = s.Hold(ctx, "", key); err == nil {
							h.Commit([]byte("v"), int64(time.Hour))
						}
					}
					if errors.Is(err, storage.ErrClosed) {
						return
					}
					if err != nil {
						t.Errorf("write before Close: %v", err)
						return
					}
				}
			})
		}
		for range 8 {
			<-started
		}
		s.Close()
		wg.Wait()
		if n := s.Len(); n != 0 {
			t.Fatalf("round %d: Len after Close and every write returned = %d, want 0", round, n)
		}
	}
}

// TestCloseKeepsInsertsExclusive: calls that insert one new key while
// Close runs still exclude each other: at most one of them swaps, and the
// others fail with storage.ErrClosed or see the first one's record.
func TestCloseKeepsInsertsExclusive(t *testing.T) {
	ctx := context.Background()
	for round := range 3000 {
		s := memory.New()
		start := make(chan struct{})
		var wg sync.WaitGroup
		var swaps atomic.Int64
		for range 4 {
			wg.Go(func() {
				<-start
				_, swapped, err := s.CompareAndSwap(ctx, "k", 0, []byte("v"), time.Minute)
				if err != nil && !errors.Is(err, storage.ErrClosed) {
					t.Errorf("CompareAndSwap while Close runs: %v", err)
				}
				if swapped {
					swaps.Add(1)
				}
			})
		}
		wg.Go(func() {
			<-start
			s.Close()
		})
		close(start)
		wg.Wait()
		if n := swaps.Load(); n > 1 {
			t.Fatalf("round %d: %d inserts of one key with expected 0 swapped while Close ran, want at most 1", round, n)
		}
	}
}
