package limiter_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sluice-go/sluice/internal/fakeclock"
	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/memory"
)

// gatedTimed is a timedStore whose reads a test can hold, by number.
type gatedTimed struct {
	timedStore
	mu    sync.Mutex
	gets  int
	onGet func(n int, ctx context.Context) error
}

func (s *gatedTimed) GetTimed(ctx context.Context, key string) (storage.Record, time.Time, error) {
	s.mu.Lock()
	s.gets++
	n := s.gets
	s.mu.Unlock()
	if err := s.onGet(n, ctx); err != nil {
		return storage.Record{}, time.Time{}, err
	}
	return s.timedStore.GetTimed(ctx, key)
}

// TestFlightSkipsCallersThatLeft: the leader and two of the callers
// batched with it leave while its flight reads the store, before anything
// was written. The flight goes on for the others, who get their decisions,
// and counts none of the callers that left.
func TestFlightSkipsCallersThatLeft(t *testing.T) {
	mem := memory.New()
	defer mem.Close()
	clock := fakeclock.New(t0)
	relA, bGet, left := make(chan struct{}), make(chan struct{}), make(chan struct{})
	st := &gatedTimed{timedStore: timedStore{Store: mem, clock: clock}, onGet: func(n int, ctx context.Context) error {
		switch n {
		case 1: // A's read of the store's clock fails
			<-relA
			return storage.ErrUnavailable
		case 2: // B's read, deciding C1, D, E and C2 too: B, C1 and C2 leave meanwhile
			close(bGet)
			<-left
		}
		return nil
	}}
	lim, err := limiter.New(st, []limiter.Bucket{{Capacity: 10, Period: time.Hour}}, limiter.WithClock(clock), limiter.WithStoreClock())
	if err != nil {
		t.Fatal(err)
	}
	bg := context.Background()
	ctxB, cancelB := context.WithCancel(bg)
	ctxC, cancelC := context.WithCancel(bg)
	call := func(ctx context.Context, cost int64) chan error {
		ch := make(chan error, 1)
		go func() { _, err := lim.AllowN(ctx, "k", cost); ch <- err }()
		return ch
	}
	a := call(bg, 1)
	for func() bool { st.mu.Lock(); defer st.mu.Unlock(); return st.gets == 0 }() {
		time.Sleep(100 * time.Microsecond)
	}
	b := call(ctxB, 1)
	waitQueued(t, lim, 1)
	c1 := call(ctxC, 3)
	waitQueued(t, lim, 2)
	dd := make(chan limiter.Decision, 1)
	go func() {
		d, err := lim.Allow(bg, "k")
		if err != nil {
			t.Errorf("D: %v", err)
		}
		dd <- d
	}()
	waitQueued(t, lim, 3)
	ee := make(chan error, 1)
	go func() {
		d, err := lim.Allow(bg, "k")
		if err == nil && (!d.Allowed || d.Remaining != 8) {
			err = fmt.Errorf("decision %+v, want allowed with 8 left", d)
		}
		ee <- err
	}()
	waitQueued(t, lim, 4)
	c2 := call(ctxC, 5)
	waitQueued(t, lim, 5)
	close(relA)
	if err := <-a; !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("A: %v, want storage.ErrUnavailable", err)
	}
	<-bGet
	cancelC()
	for _, ch := range []chan error{c1, c2} {
		if err := <-ch; !errors.Is(err, context.Canceled) {
			t.Fatalf("batched caller that left: %v, want context.Canceled", err)
		}
	}
	cancelB()
	if err := <-b; !errors.Is(err, context.Canceled) {
		t.Fatalf("B: %v, want context.Canceled", err)
	}
	close(left)
	select {
	case d := <-dd:
		if !d.Allowed || d.Remaining != 9 {
			t.Errorf("D: %+v, want allowed with 9 left (the costs of the callers that left not taken)", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("D hangs")
	}
	select {
	case err := <-ee:
		if err != nil {
			t.Errorf("E, batched behind D: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("E hangs")
	}
	if d, err := lim.Peek(bg, "k"); err != nil || d.Remaining != 8 {
		t.Errorf("Peek = %+v, %v; want 8 left (D and E)", d, err)
	}
}
