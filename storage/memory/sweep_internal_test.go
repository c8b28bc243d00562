package memory

import (
	"context"
	"testing"
	"time"
)

// The janitor decides under the entry's lock: a record that had expired
// when the sweep began but is written again while the sweep waits for its
// lock stays. The holder commits only once the sweep has had time to
// reach the lock; the sweep is correct however late it gets there, so the
// wait can only make the test miss the bug, never fail on correct code.
func TestSweepDecidesUnderTheLock(t *testing.T) {
	s := New(WithSweepInterval(time.Hour))
	defer s.Close()
	ctx := context.Background()
	if _, ok, err := s.CompareAndSwap(ctx, "k", 0, []byte("old"), time.Nanosecond); err != nil || !ok {
		t.Fatal(ok, err)
	}
	h, now, err := s.Hold(ctx, "", "k") // expired: held as absent, locked
	if err != nil {
		t.Fatal(err)
	}
	if rec := h.Record(); rec.Version != 0 {
		t.Fatalf("setup: record not expired: %+v", rec)
	}
	swept := make(chan struct{})
	go func() {
		defer close(swept)
		s.t.sweep(s.now, make(chan struct{}))
	}()
	time.Sleep(20 * time.Millisecond)
	v := h.Commit([]byte("fresh"), now+int64(time.Hour))
	<-swept
	rec, err := s.Get(ctx, "k")
	if err != nil || rec.Version != v || string(rec.Value) != "fresh" {
		t.Fatalf("after a sweep that waited for the hold: Get = %q v%d, %v; want fresh v%d", rec.Value, rec.Version, err, v)
	}
}
