package faultstore_test

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-go/sluice/conformance"
	"github.com/sluice-go/sluice/internal/faultstore"
	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/memory"
)

const ttl = time.Minute

var errBoom = errors.New("boom")

// newStores returns a fault store and the memory store it wraps, closed
// when t ends.
func newStores(t *testing.T) (*faultstore.Store, *memory.Store) {
	inner := memory.New()
	t.Cleanup(func() { inner.Close() })
	return faultstore.New(inner), inner
}

// handles memoises newStore: one memory store per test, behind a new
// fault store on every call.
var handles sync.Map // testing.TB -> *memory.Store

func newStore(tb testing.TB) storage.Store {
	if inner, ok := handles.Load(tb); ok {
		return faultstore.New(inner.(*memory.Store))
	}
	inner := memory.New()
	handles.Store(tb, inner)
	tb.Cleanup(func() {
		handles.Delete(tb)
		inner.Close()
	})
	return faultstore.New(inner)
}

// With no fault set, a Store keeps the whole contract.
func TestConformance(t *testing.T) {
	conformance.RunStore(t, newStore)
	conformance.RunLimiter(t, newStore)
}

func get(t *testing.T, s storage.Store, key string) storage.Record {
	t.Helper()
	rec, err := s.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return rec
}

func TestTransparentAndCounted(t *testing.T) {
	s, inner := newStores(t)
	ctx := context.Background()
	rec, ok, err := s.CompareAndSwap(ctx, "k", 0, []byte("v1"), ttl)
	if err != nil || !ok || rec.Version == 0 || string(rec.Value) != "v1" {
		t.Fatalf("CompareAndSwap = %+v, %v, %v; want a new record v1", rec, ok, err)
	}
	if got := get(t, inner, "k"); got.Version != rec.Version {
		t.Fatalf("inner version %d, want %d", got.Version, rec.Version)
	}
	if got := get(t, s, "k"); string(got.Value) != "v1" || got.Version != rec.Version {
		t.Fatalf("Get = %+v, want %+v", got, rec)
	}
	if cur, ok, err := s.CompareAndSwap(ctx, "k", 0, []byte("v2"), ttl); err != nil || ok || cur.Version != rec.Version {
		t.Fatalf("conflicting CompareAndSwap = %+v, %v, %v; want the current record", cur, ok, err)
	}
	if err := s.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if got := get(t, inner, "k"); got.Version != 0 {
		t.Fatalf("after Delete inner has %+v", got)
	}
	if got, want := s.Calls(), (faultstore.Counts{Get: 1, CAS: 2, Delete: 1}); got != want {
		t.Fatalf("Calls() = %+v, want %+v", got, want)
	}
	s.ResetCounts()
	if got := s.Calls(); got != (faultstore.Counts{}) {
		t.Fatalf("after ResetCounts, Calls() = %+v", got)
	}
}

func TestFailAll(t *testing.T) {
	s, inner := newStores(t)
	ctx := context.Background()
	s.FailNext(faultstore.OpGet, 1, errors.New("next"))
	s.FailAll(errBoom)
	if _, err := s.Get(ctx, "k"); err != errBoom {
		t.Fatalf("Get error %v, want %v unchanged", err, errBoom)
	}
	if _, _, err := s.CompareAndSwap(ctx, "k", 0, []byte("v"), ttl); err != errBoom {
		t.Fatalf("CompareAndSwap error %v, want %v", err, errBoom)
	}
	if err := s.Delete(ctx, "k"); err != errBoom {
		t.Fatalf("Delete error %v, want %v", err, errBoom)
	}
	if got := get(t, inner, "k"); got.Version != 0 {
		t.Fatalf("a failed call wrote %+v", got)
	}
	if got, want := s.Calls(), (faultstore.Counts{Get: 1, CAS: 1, Delete: 1}); got != want {
		t.Fatalf("Calls() = %+v, want %+v (failed calls count)", got, want)
	}
	s.FailAll(nil)
	// FailAll did not consume FailNext's count.
	if _, err := s.Get(ctx, "k"); err == nil || err.Error() != "next" {
		t.Fatalf("Get after FailAll(nil) = %v, want the FailNext error", err)
	}
	if _, err := s.Get(ctx, "k"); err != nil {
		t.Fatalf("Get after faults cleared: %v", err)
	}
}

func TestFailNext(t *testing.T) {
	s, inner := newStores(t)
	ctx := context.Background()
	down := errors.Join(storage.ErrUnavailable, errBoom)
	s.FailNext(faultstore.OpCAS, 2, down)
	for i := range 2 {
		if _, _, err := s.CompareAndSwap(ctx, "k", 0, []byte("v"), ttl); !errors.Is(err, storage.ErrUnavailable) {
			t.Fatalf("CAS %d: error %v, want ErrUnavailable", i, err)
		}
		if _, err := s.Get(ctx, "k"); err != nil {
			t.Fatalf("Get between failing CASes: %v", err)
		}
	}
	if got := get(t, inner, "k"); got.Version != 0 {
		t.Fatalf("a failed CAS wrote %+v", got)
	}
	if _, ok, err := s.CompareAndSwap(ctx, "k", 0, []byte("v"), ttl); err != nil || !ok {
		t.Fatalf("third CAS = %v, %v; want a swap", ok, err)
	}

	s.FailNext(faultstore.OpDelete, 1, errBoom)
	if err := s.Delete(ctx, "k"); err != errBoom {
		t.Fatalf("Delete error %v, want %v", err, errBoom)
	}
	if got := get(t, inner, "k"); got.Version == 0 {
		t.Fatal("a failed Delete deleted")
	}
	s.FailNext(faultstore.OpGet, 5, errBoom)
	s.FailNext(faultstore.OpGet, 0, errBoom) // clears
	if _, err := s.Get(ctx, "k"); err != nil {
		t.Fatalf("Get after FailNext(OpGet, 0): %v", err)
	}
}

func TestLatency(t *testing.T) {
	s, inner := newStores(t)
	const d = 20 * time.Millisecond
	s.SetLatency(d)
	start := time.Now()
	if _, _, err := s.CompareAndSwap(context.Background(), "k", 0, []byte("v"), ttl); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < d {
		t.Fatalf("call took %v, want at least %v", took, d)
	}

	s.SetLatency(time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		time.Sleep(time.Millisecond)
		cancel()
	}()
	cur := get(t, inner, "k")
	if _, _, err := s.CompareAndSwap(ctx, "k", cur.Version, []byte("w"), ttl); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled CAS error %v, want context.Canceled", err)
	}
	if got := get(t, inner, "k"); got.Version != cur.Version {
		t.Fatalf("a cancelled CAS wrote %+v", got)
	}
	if _, err := s.Get(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get with a done ctx: %v", err)
	}
	if err := s.Delete(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Delete with a done ctx: %v", err)
	}
	if got := get(t, inner, "k"); got.Version != cur.Version {
		t.Fatal("a cancelled Delete deleted")
	}
	s.SetLatency(0)
	if _, err := s.Get(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
}

func TestConflictNext(t *testing.T) {
	s, inner := newStores(t)
	ctx := context.Background()
	s.ConflictNext(2)

	// An absent key meets no conflict and uses none up.
	first, ok, err := s.CompareAndSwap(ctx, "k", 0, []byte("a"), ttl)
	if err != nil || !ok {
		t.Fatalf("insert = %v, %v; want a swap", ok, err)
	}
	expected := first.Version
	for i := range 2 {
		rec, ok, err := s.CompareAndSwap(ctx, "k", expected, []byte("b"), ttl)
		if err != nil || ok {
			t.Fatalf("CAS %d = %v, %v; want a conflict", i, ok, err)
		}
		if rec.Version <= expected || string(rec.Value) != "a" {
			t.Fatalf("CAS %d returned %+v; want value a with a version above %d", i, rec, expected)
		}
		if got := get(t, inner, "k"); got.Version != rec.Version {
			t.Fatalf("CAS %d returned version %d, store has %d", i, rec.Version, got.Version)
		}
		expected = rec.Version
	}
	rec, ok, err := s.CompareAndSwap(ctx, "k", expected, []byte("b"), ttl)
	if err != nil || !ok || string(rec.Value) != "b" {
		t.Fatalf("CAS after the conflicts = %+v, %v, %v; want a swap to b", rec, ok, err)
	}
	if got, want := s.Calls().CAS, int64(4); got != want {
		t.Fatalf("Calls().CAS = %d, want %d (competing writes are not counted)", got, want)
	}
}

func TestAmbiguousNext(t *testing.T) {
	s, inner := newStores(t)
	ctx := context.Background()
	s.AmbiguousNext(1)
	_, ok, err := s.CompareAndSwap(ctx, "k", 0, []byte("v"), ttl)
	if !errors.Is(err, storage.ErrUnavailable) || ok {
		t.Fatalf("CAS = %v, %v; want an error wrapping ErrUnavailable", ok, err)
	}
	got := get(t, inner, "k")
	if got.Version == 0 || string(got.Value) != "v" {
		t.Fatalf("inner has %+v; the write should have landed", got)
	}
	if _, ok, err := s.CompareAndSwap(ctx, "k", got.Version, []byte("w"), ttl); err != nil || !ok {
		t.Fatalf("next CAS = %v, %v; want a plain swap", ok, err)
	}
}

func TestHook(t *testing.T) {
	s, _ := newStores(t)
	ctx := context.Background()
	type call struct {
		op  faultstore.Op
		key string
	}
	var mu sync.Mutex
	var seen []call
	release := make(chan struct{})
	entered := make(chan struct{})
	s.Hook(func(op faultstore.Op, key string) {
		mu.Lock()
		seen = append(seen, call{op, key})
		mu.Unlock()
		if key == "blocked" {
			close(entered)
			<-release
		}
	})
	done := make(chan error)
	go func() {
		_, err := s.Get(ctx, "blocked")
		done <- err
	}()
	<-entered
	select {
	case <-done:
		t.Fatal("Get returned while its hook was blocked")
	default:
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s.CompareAndSwap(ctx, "a", 0, []byte("v"), ttl)
	s.Delete(ctx, "b")
	s.Hook(nil)
	s.Get(ctx, "c")
	mu.Lock()
	defer mu.Unlock()
	want := []call{{faultstore.OpGet, "blocked"}, {faultstore.OpCAS, "a"}, {faultstore.OpDelete, "b"}}
	if len(seen) != len(want) {
		t.Fatalf("hook saw %v, want %v", seen, want)
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Fatalf("hook call %d = %v, want %v", i, seen[i], want[i])
		}
	}
}

func TestClose(t *testing.T) {
	s, inner := newStores(t)
	ctx := context.Background()
	for range 2 {
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	if _, err := s.Get(ctx, "k"); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
	if _, _, err := s.CompareAndSwap(ctx, "k", 0, nil, ttl); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("CompareAndSwap after Close: %v", err)
	}
	if err := s.Delete(ctx, "k"); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("Delete after Close: %v", err)
	}
	if _, err := inner.Get(ctx, "k"); err != nil {
		t.Fatalf("Close closed the wrapped store: %v", err)
	}
}

func TestOpString(t *testing.T) {
	for op, want := range map[faultstore.Op]string{faultstore.OpGet: "Get", faultstore.OpCAS: "CompareAndSwap", faultstore.OpDelete: "Delete", 9: "Op(9)"} {
		if got := op.String(); got != want {
			t.Errorf("Op(%d).String() = %q, want %q", int(op), got, want)
		}
	}
}

// TestConcurrent changes faults while goroutines increment one counter
// through the store; run with -race. Competing writes keep the value, so
// the counter must equal the number of successful swaps.
func TestConcurrent(t *testing.T) {
	s, inner := newStores(t)
	ctx := context.Background()
	s.Hook(func(faultstore.Op, string) {})
	var wg sync.WaitGroup
	var swaps atomic.Uint64
	for range 4 {
		wg.Go(func() {
			for range 200 {
				rec, err := s.Get(ctx, "n")
				if err != nil {
					continue
				}
				var n uint64
				if rec.Version != 0 {
					n = binary.BigEndian.Uint64(rec.Value)
				}
				next := binary.BigEndian.AppendUint64(nil, n+1)
				if _, ok, err := s.CompareAndSwap(ctx, "n", rec.Version, next, ttl); ok && err == nil {
					swaps.Add(1)
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 100 {
			s.ConflictNext(i % 3)
			s.FailNext(faultstore.OpGet, i%2, errBoom)
			s.Calls()
		}
	})
	wg.Wait()
	got := get(t, inner, "n")
	if swaps.Load() == 0 || got.Version == 0 {
		t.Fatal("no CompareAndSwap succeeded")
	}
	if n := binary.BigEndian.Uint64(got.Value); n != swaps.Load() {
		t.Fatalf("counter = %d, successful swaps = %d", n, swaps.Load())
	}
}
