package limiter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-go/sluice/internal/fakeclock"
	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/memory"
)

// gateStore wraps a store (hiding InPlaceStore) and lets a test hold calls.
type gateStore struct {
	inner storage.Store
	mu    sync.Mutex
	casN  int
	onCAS func(n int, ctx context.Context) (land bool, err error) // before forwarding
	after func(n int)                                             // after forwarding
	getN  int
	onGet func(n int) // after inner Get
}

func (g *gateStore) Get(ctx context.Context, key string) (storage.Record, error) {
	rec, err := g.inner.Get(ctx, key)
	g.mu.Lock()
	g.getN++
	n, f := g.getN, g.onGet
	g.mu.Unlock()
	if f != nil {
		f(n)
	}
	return rec, err
}
func (g *gateStore) CompareAndSwap(ctx context.Context, key string, exp uint64, v []byte, ttl time.Duration) (storage.Record, bool, error) {
	g.mu.Lock()
	g.casN++
	n, f, after := g.casN, g.onCAS, g.after
	g.mu.Unlock()
	if f != nil {
		land, err := f(n, ctx)
		if err != nil {
			if land { // the write lands, the reply is lost
				g.inner.CompareAndSwap(context.Background(), key, exp, v, ttl)
			}
			return storage.Record{}, false, err
		}
	}
	rec, swapped, err := g.inner.CompareAndSwap(ctx, key, exp, v, ttl)
	if after != nil {
		after(n)
	}
	return rec, swapped, err
}
func (g *gateStore) Delete(ctx context.Context, key string) error { return g.inner.Delete(ctx, key) }
func (g *gateStore) Close() error                                 { return nil }

// gatedLimiter returns a limiter of capacity tokens an hour, on a manual
// clock that stands still, over a gateStore in front of a memory store
// (closed when the test ends).
func gatedLimiter(t *testing.T, capacity int64, opts ...Option) (*gateStore, *Limiter) {
	t.Helper()
	mem := memory.New()
	t.Cleanup(func() { mem.Close() })
	g := &gateStore{inner: mem}
	l, err := New(g, []Bucket{{Capacity: capacity, Period: time.Hour}}, append([]Option{WithClock(fakeclock.New(time.Unix(1e9, 0)))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return g, l
}

// waitCAS waits until a first compare-and-swap has reached the gate.
func (g *gateStore) waitCAS() {
	for func() bool { g.mu.Lock(); defer g.mu.Unlock(); return g.casN == 0 }() {
		time.Sleep(time.Millisecond)
	}
}

func waitPending(t *testing.T, l *Limiter, key string, n int) {
	for i := 0; Pending(l, key) != n; i++ {
		if i > 5000 {
			t.Fatalf("pending %d, want %d", Pending(l, key), n)
		}
		time.Sleep(time.Millisecond)
	}
}

type res struct {
	d   Decision
	err error
}

// Leader B's context ends while its compare-and-swap, which also decides
// C and D, is in flight. B stops waiting at once, with its context's
// error; C and D, whose contexts are alive, get their decisions from the
// flight, which goes on without B's caller. B's call was sent, so it is
// charged.
func TestLeaderLeavingDoesNotFailItsBatch(t *testing.T) {
	relA, relB, bStarted := make(chan struct{}), make(chan struct{}), make(chan struct{})
	g, l := gatedLimiter(t, 10)
	g.onCAS = func(n int, ctx context.Context) (bool, error) {
		switch n {
		case 1: // A's flight
			<-relA
		case 2: // B's flight, with C and D batched
			close(bStarted)
			<-relB
		}
		return false, nil
	}
	ctx := context.Background()
	ctxB, cancelB := context.WithCancel(ctx)
	out := make([]chan res, 4)
	for i := range out {
		out[i] = make(chan res, 1)
	}
	call := func(i int, c context.Context) {
		go func() { d, err := l.Allow(c, "k"); out[i] <- res{d, err} }()
	}
	call(0, ctx)
	g.waitCAS()
	call(1, ctxB)
	waitPending(t, l, "k", 1)
	call(2, ctx)
	waitPending(t, l, "k", 2)
	call(3, ctx)
	waitPending(t, l, "k", 3)
	close(relA)
	<-bStarted
	cancelB()
	if r := <-out[1]; !errors.Is(r.err, context.Canceled) {
		t.Errorf("B, whose context ended during its flight: %+v, %v; want context.Canceled at once", r.d, r.err)
	}
	close(relB)
	for i, ch := range out {
		if i == 1 {
			continue
		}
		select {
		case r := <-ch:
			if r.err != nil || !r.d.Allowed {
				t.Errorf("call %d, whose context is alive: %+v, %v; want allowed", i, r.d, r.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("call %d hangs", i)
		}
	}
	g.mu.Lock()
	g.onCAS = nil
	g.mu.Unlock()
	if d, err := l.Peek(ctx, "k"); err != nil || d.Remaining != 6 {
		t.Errorf("Peek = %+v, %v; want 6 left (A, B, C and D charged)", d, err)
	}
}

// When every caller of a flight has left, its context ends and its store
// call is cut off; the key's next caller is served as usual.
func TestFlightEndsWhenEveryCallerLeft(t *testing.T) {
	relA, bStarted, bCut := make(chan struct{}), make(chan struct{}), make(chan struct{})
	g, l := gatedLimiter(t, 10)
	g.onCAS = func(n int, ctx context.Context) (bool, error) {
		switch n {
		case 1: // A's flight
			<-relA
		case 2: // B's flight, with C batched
			close(bStarted)
			<-ctx.Done()
			close(bCut)
			return false, ctx.Err()
		}
		return false, nil
	}
	ctx := context.Background()
	ctxB, cancelB := context.WithCancel(ctx)
	ctxC, cancelC := context.WithCancel(ctx)
	a, b, c := make(chan res, 1), make(chan res, 1), make(chan res, 1)
	go func() { d, err := l.Allow(ctx, "k"); a <- res{d, err} }()
	g.waitCAS()
	go func() { d, err := l.Allow(ctxB, "k"); b <- res{d, err} }()
	waitPending(t, l, "k", 1)
	go func() { d, err := l.Allow(ctxC, "k"); c <- res{d, err} }()
	waitPending(t, l, "k", 2)
	close(relA)
	<-bStarted
	cancelB()
	select {
	case <-bCut:
		t.Fatal("the flight was cut off while C still waited for it")
	case <-time.After(50 * time.Millisecond):
	}
	cancelC()
	<-bCut
	for name, ch := range map[string]chan res{"B": b, "C": c} {
		if r := <-ch; !errors.Is(r.err, context.Canceled) {
			t.Errorf("%s: %+v, %v; want context.Canceled", name, r.d, r.err)
		}
	}
	if r := <-a; r.err != nil || !r.d.Allowed {
		t.Errorf("A: %+v, %v", r.d, r.err)
	}
	if d, err := l.Allow(ctx, "k"); err != nil || !d.Allowed {
		t.Errorf("the next call on the key: %+v, %v; want allowed", d, err)
	}
}

// A leader whose context ends between two store calls makes the second
// with a context already done, which a store refuses without writing: the
// calls batched with it, whose contexts are alive, go to the next leader
// instead of being told their outcome is unknown.
func TestHandoverAfterContextEndedBetweenCalls(t *testing.T) {
	g, l := gatedLimiter(t, 10)
	mem := g.inner
	ctx := context.Background()
	ctxLeader, cancelLeader := context.WithCancel(ctx)
	defer cancelLeader()
	leader, batched := make(chan res, 1), make(chan res, 1)
	g.onCAS = func(n int, _ context.Context) (bool, error) {
		switch n {
		case 1: // the first call's flight: two more calls queue behind it
			go func() { d, err := l.Allow(ctxLeader, "k"); leader <- res{d, err} }()
			waitPending(t, l, "k", 1)
			go func() { d, err := l.Allow(ctx, "k"); batched <- res{d, err} }()
			waitPending(t, l, "k", 2)
		case 2: // the leader's flight, deciding both: another process writes first
			rec, err := mem.Get(ctx, l.prefix+"k")
			if err != nil {
				t.Error(err)
			}
			if _, swapped, err := mem.CompareAndSwap(ctx, l.prefix+"k", rec.Version, rec.Value, time.Hour); err != nil || !swapped {
				t.Errorf("the other process's write: %t, %v", swapped, err)
			}
		}
		return false, nil
	}
	g.after = func(n int) {
		if n == 2 {
			cancelLeader() // as the conflict's reply arrives
		}
	}
	if d, err := l.Allow(ctx, "k"); err != nil || !d.Allowed {
		t.Fatalf("the first call: %+v, %v", d, err)
	}
	if r := <-leader; !errors.Is(r.err, context.Canceled) {
		t.Errorf("the leader whose context ended: %+v, %v; want context.Canceled", r.d, r.err)
	}
	r := <-batched
	if r.err != nil || !r.d.Allowed {
		t.Errorf("the call batched with it, whose context is alive: %+v, %v; want it decided (allowed)", r.d, r.err)
	}
	g.mu.Lock()
	g.onCAS, g.after = nil, nil
	g.mu.Unlock()
	if d, err := l.Peek(ctx, "k"); err != nil || d.Remaining != 8 {
		t.Errorf("Peek = %+v, %v; want 8 tokens left (two calls admitted)", d, err)
	}
}

// Peek's Get precedes a Reset; its cache update follows it.
func TestPeekDoesNotUndoReset(t *testing.T) {
	peekAcrossReset(t, nil)
}

// The same, with "k"'s cache slot evicted between Peek's two lookups and
// made again (by a caller that left, so that it remembers nothing): the
// new slot's gen is 0, like the old one's before the Reset, and Peek must
// still not cache the record it read before the Reset.
func TestPeekDoesNotUndoResetAcrossEviction(t *testing.T) {
	peekAcrossReset(t, func(l *Limiter) {
		other := ""
		for i := 0; other == ""; i++ { // a key of the same cache shard, which holds one slot
			if k := fmt.Sprint("other", i); l.cache.shard(k) == l.cache.shard("k") {
				other = k
			}
		}
		ctx := context.Background()
		l.Allow(ctx, other) // evicts "k"'s slot
		left, cancel := context.WithCancel(ctx)
		cancel()
		l.Allow(left, "k") // a new slot for "k", remembering nothing
	}, WithCacheSize(1))
}

// peekAcrossReset exhausts "k", then resets it while a Peek has read the
// exhausted record and not yet cached it; between runs after the Reset,
// before Peek goes on. The next Allow must be allowed.
func peekAcrossReset(t *testing.T, between func(*Limiter), opts ...Option) {
	hold := make(chan struct{})
	got := make(chan struct{})
	var armed atomic.Bool
	// The memory store is hidden behind a plain Store: on it, the
	// limiter would decide in the store under its lock, with no cache to
	// undo.
	st, l := gatedLimiter(t, 2, opts...)
	st.onGet = func(int) {
		if armed.CompareAndSwap(true, false) {
			close(got)
			<-hold
		}
	}
	ctx := context.Background()
	l.Allow(ctx, "k")
	l.Allow(ctx, "k") // exhausted, and remembered
	armed.Store(true)
	done := make(chan struct{})
	go func() { l.Peek(ctx, "k"); close(done) }()
	<-got // Peek has read the exhausted record
	if err := l.Reset(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if between != nil {
		between(l)
	}
	close(hold)
	<-done
	d, err := l.Allow(ctx, "k")
	if err != nil || !d.Allowed {
		t.Errorf("after Reset: allowed=%v err=%v retry=%v (want allowed)", d.Allowed, err, d.RetryAfter)
	}
}

// A store that panics in a flight that runs in a goroutine of its own (a
// leader whose context can end, carrying a batch) panics in the leader's
// caller, who can recover it, as when the leader runs the flight itself:
// not in a goroutine that would crash the program.
func TestFlightPanicReachesLeader(t *testing.T) {
	relA := make(chan struct{})
	g, l := gatedLimiter(t, 10)
	g.onCAS = func(n int, ctx context.Context) (bool, error) {
		switch n {
		case 1: // A's flight
			<-relA
		case 2: // B's flight, with C batched
			panic("boom")
		}
		return false, nil
	}
	ctx := context.Background()
	ctxB, cancelB := context.WithCancel(ctx)
	defer cancelB()
	ctxC, cancelC := context.WithCancel(ctx)
	a, b, c := make(chan res, 1), make(chan any, 1), make(chan res, 1)
	go func() { d, err := l.Allow(ctx, "k"); a <- res{d, err} }()
	g.waitCAS()
	go func() {
		defer func() { b <- recover() }()
		_, _ = l.Allow(ctxB, "k")
	}()
	waitPending(t, l, "k", 1)
	go func() { d, err := l.Allow(ctxC, "k"); c <- res{d, err} }()
	waitPending(t, l, "k", 2)
	close(relA)
	if got := <-b; got != "boom" {
		t.Errorf("B's caller recovered %v, want the store's panic (boom)", got)
	}
	<-a
	cancelC() // C's flight panicked: it stops waiting when its context ends
	if r := <-c; !errors.Is(r.err, context.Canceled) {
		t.Errorf("C: %+v, %v; want context.Canceled", r.d, r.err)
	}
}
