package pipeline

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// server is a fake server: each round trip waits for a token of release
// (closing release ends them all), and records the calls it carried and the context it had.
type server struct {
	mu      sync.Mutex
	trips   [][]int
	ctxs    []context.Context
	release chan struct{}
}

func newServer() *server { return &server{release: make(chan struct{})} }

func (s *server) one(ctx context.Context, c int) { s.many(ctx, []int{c}) }

func (s *server) many(ctx context.Context, cs []int) {
	s.mu.Lock()
	s.trips = append(s.trips, slices.Clone(cs))
	s.ctxs = append(s.ctxs, ctx)
	s.mu.Unlock()
	<-s.release
}

func (s *server) sent() [][]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.trips)
}

// waitFor polls until cond holds, for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; !cond(); i++ {
		if i == 10000 {
			t.Fatalf("after 10s: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Calls go alone while fewer than maxInFlight round trips are under way;
// then they queue, and go together, at most maxBatch at a time and in the
// order they came, as soon as a round trip ends.
func TestQueuesBeyondMaxInFlight(t *testing.T) {
	srv := newServer()
	p := New(2, 3, srv.one, srv.many)
	var wg sync.WaitGroup
	do := func(c int) {
		wg.Go(func() {
			if err := p.Do(context.Background(), c); err != nil {
				t.Errorf("Do(%d) = %v", c, err)
			}
		})
	}
	do(1)
	do(2)
	waitFor(t, "two calls sent alone", func() bool { return len(srv.sent()) == 2 })
	for c := 3; c <= 7; c++ {
		do(c)
		waitFor(t, "the call queued", func() bool { return p.Queued() == c-2 })
	}
	close(srv.release)
	wg.Wait()
	// Both round trips end at once, and each takes the next batch: they
	// may be recorded in either order.
	trips := srv.sent()
	slices.SortFunc(trips, func(a, b []int) int { return a[0] - b[0] })
	if want := [][]int{{1}, {2}, {3, 4, 5}, {6, 7}}; !slices.EqualFunc(trips, want, slices.Equal) {
		t.Errorf("round trips %v, want %v", trips, want)
	}
	// The last batch's callers return before its goroutine frees the
	// round trip's place.
	waitFor(t, "no call queued and no round trip in flight", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.queue) == 0 && p.inFlight == 0
	})
}

// A queued call whose context ends returns the context's error and is not
// sent; the calls queued with it still go together, on a context that
// none of their callers can cancel and that ends at their latest
// deadline.
func TestQueuedCallGivenUp(t *testing.T) {
	srv := newServer()
	p := New(1, 10, srv.one, srv.many)
	go func() { _ = p.Do(context.Background(), 0) }()
	waitFor(t, "the first call sent", func() bool { return len(srv.sent()) == 1 })

	gone, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 3)
	go func() { errs <- p.Do(gone, 1) }()
	waitFor(t, "call 1 queued", func() bool { return p.Queued() == 1 })
	early, cancelEarly := context.WithTimeout(context.Background(), time.Hour)
	defer cancelEarly()
	late, cancelLate := context.WithTimeout(context.Background(), 2*time.Hour)
	defer cancelLate()
	go func() { errs <- p.Do(early, 2) }()
	waitFor(t, "call 2 queued", func() bool { return p.Queued() == 2 })
	go func() { errs <- p.Do(late, 3) }()
	waitFor(t, "call 3 queued", func() bool { return p.Queued() == 3 })

	cancel()
	if err := <-errs; err != context.Canceled {
		t.Fatalf("the call whose context ended returned %v, want context.Canceled", err)
	}
	srv.release <- struct{}{} // the first round trip ends
	waitFor(t, "the batch sent", func() bool { return len(srv.sent()) == 2 })
	if trips := srv.sent(); !slices.Equal(trips[1], []int{2, 3}) {
		t.Fatalf("round trips %v, want [0] then [2 3]", trips)
	}
	srv.mu.Lock()
	ctx := srv.ctxs[1]
	srv.mu.Unlock()
	lateDL, _ := late.Deadline()
	if dl, ok := ctx.Deadline(); !ok || !dl.Equal(lateDL) {
		t.Errorf("the batch's deadline is %v (%t), want the latest of its calls', %v", dl, ok, lateDL)
	}
	cancelEarly()
	if ctx.Err() != nil {
		t.Errorf("cancelling one caller cancelled the batch's context: %v", ctx.Err())
	}
	// The caller who gave up stops waiting for its outcome; the other
	// gets its own once the batch ends.
	if err := <-errs; err != context.Canceled {
		t.Errorf("the caller who gave up during the batch got %v, want context.Canceled", err)
	}
	close(srv.release)
	if err := <-errs; err != nil {
		t.Errorf("the other call of the batch returned %v", err)
	}
}

// A batch with a call that has no deadline has none.
func TestBatchWithoutDeadline(t *testing.T) {
	withDL, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	batch := []*waiting[int]{{ctx: withDL}, {ctx: context.Background()}}
	ctx, stop := batchContext(batch)
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		t.Errorf("deadline %v, want none", dl)
	}
}

// With LeaveOnCancel, a caller whose call went out at once stops waiting
// when its context is cancelled; the round trip keeps its place until it
// ends, so a call made meanwhile queues, and goes out once it has.
func TestLeaveOnCancel(t *testing.T) {
	srv := newServer()
	p := New(1, 8, srv.one, srv.many).LeaveOnCancel()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Do(ctx, 1) }()
	waitFor(t, "call 1 sent", func() bool { return len(srv.sent()) == 1 })
	cancel()
	if err := <-errc; err != context.Canceled {
		t.Fatalf("Do(1) after its context was cancelled mid-trip = %v, want context.Canceled", err)
	}
	second := make(chan error, 1)
	go func() { second <- p.Do(context.Background(), 2) }()
	waitFor(t, "call 2 queued", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.queue) == 1
	})
	if got := srv.sent(); len(got) != 1 {
		t.Fatalf("sent %v while the first round trip still held its place", got)
	}
	close(srv.release)
	if err := <-second; err != nil {
		t.Fatalf("Do(2) = %v", err)
	}
	if got, want := srv.sent(), [][]int{{1}, {2}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("round trips %v, want %v", got, want)
	}
}

// A context that can never end runs the call on the caller's goroutine;
// WaitOrLeave returns nil once it has.
func TestWaitOrLeaveBackground(t *testing.T) {
	ran := false
	if err := WaitOrLeave(context.Background(), func() { ran = true }); err != nil || !ran {
		t.Fatalf("WaitOrLeave = %v, ran %t", err, ran)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran = false
	if err := WaitOrLeave(ctx, func() { ran = true }); err != nil || !ran {
		t.Fatalf("WaitOrLeave with a live context = %v, ran %t", err, ran)
	}
}

// A panic in the function sending a call reaches the caller of Do, who
// may recover it (as net/http does per request), also when the call runs
// in a goroutine of its own (LeaveOnCancel, a context that can end); and
// the round trip's place is freed.
func TestPanicReachesCaller(t *testing.T) {
	p := New(1, 1, func(context.Context, int) { panic("boom") }, func(context.Context, []int) {}).LeaveOnCancel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := func() (r any) {
		defer func() { r = recover() }()
		_ = p.Do(ctx, 1)
		return nil
	}()
	if got != "boom" {
		t.Fatalf("the caller of Do recovered %v, want the panic of the call (boom)", got)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inFlight != 0 {
		t.Errorf("%d round trips in flight after the panic, want 0", p.inFlight)
	}
}

// BenchmarkWaitOrLeave is the cost of leaving on cancellation for a call
// that returns at once: a goroutine and a channel per call.
func BenchmarkWaitOrLeave(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for b.Loop() {
		_ = WaitOrLeave(ctx, func() {})
	}
}
