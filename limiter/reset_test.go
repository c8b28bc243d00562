package limiter_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-go/sluice/internal/faultstore"
	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/storage"
)

// afterCAS runs a hook after each compare-and-swap has landed, before its
// reply reaches the limiter.
type afterCAS struct {
	storage.Store
	hook func()
}

func (s *afterCAS) CompareAndSwap(ctx context.Context, key string, exp uint64, v []byte, ttl time.Duration) (storage.Record, bool, error) {
	rec, ok, err := s.Store.CompareAndSwap(ctx, key, exp, v, ttl)
	if s.hook != nil {
		s.hook()
	}
	return rec, ok, err
}

// TestResetDuringFlightIsNotUndone: a Reset that deletes the record after
// a flight's write landed, but before its reply came back, is not undone
// by the flight caching what it wrote.
func TestResetDuringFlightIsNotUndone(t *testing.T) {
	_, fs, clock := faulty(t, []limiter.Bucket{{Capacity: 1, Period: time.Hour}})
	landed, release := make(chan struct{}), make(chan struct{})
	var held atomic.Bool // the first compare-and-swap only
	st := &afterCAS{Store: fs}
	st.hook = func() {
		if held.CompareAndSwap(false, true) {
			close(landed)
			<-release
		}
	}
	lim2, err := limiter.New(st, []limiter.Bucket{{Capacity: 1, Period: time.Hour}}, limiter.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	done := make(chan limiter.Decision, 1)
	go func() { d, _ := lim2.Allow(ctx, "k"); done <- d }()
	<-landed
	if err := lim2.Reset(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	close(release)
	if d := <-done; !d.Allowed {
		t.Fatalf("first call: %+v, want allowed", d)
	}
	if d, err := lim2.Allow(ctx, "k"); err != nil || !d.Allowed {
		t.Errorf("after a Reset that followed the write: %+v, %v; want allowed (the key is full again)", d, err)
	}
}

// TestRefundWithLostReplyForgetsCache: a refund whose reply is lost may
// have landed, so an exhausted key is not denied from the cache after it.
func TestRefundWithLostReplyForgetsCache(t *testing.T) {
	lim, fs, _ := faulty(t, []limiter.Bucket{{Capacity: 1, Period: time.Hour}})
	ctx := context.Background()
	if d, err := lim.Allow(ctx, "k"); err != nil || !d.Allowed {
		t.Fatalf("first call: %+v, %v", d, err)
	}
	fs.AmbiguousNext(1)
	if err := lim.Refund(ctx, "k", 1); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("Refund with a lost reply: %v, want storage.ErrUnavailable", err)
	}
	if d, err := lim.Allow(ctx, "k"); err != nil || !d.Allowed {
		t.Errorf("after a refund that landed: %+v, %v; want allowed (the token is back in the store)", d, err)
	}
}

// deleteLost is a store whose Delete lands but reports a failure.
type deleteLost struct{ *faultstore.Store }

func (s deleteLost) Delete(ctx context.Context, key string) error {
	if err := s.Store.Delete(ctx, key); err != nil {
		return err
	}
	return storage.ErrUnavailable
}

// TestResetWithLostReplyForgetsCache: a Reset that fails may have landed,
// so the key is not denied from the cache after it.
func TestResetWithLostReplyForgetsCache(t *testing.T) {
	_, fs, clock := faulty(t, []limiter.Bucket{{Capacity: 1, Period: time.Hour}})
	lim, err := limiter.New(deleteLost{fs}, []limiter.Bucket{{Capacity: 1, Period: time.Hour}}, limiter.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if d, err := lim.Allow(ctx, "k"); err != nil || !d.Allowed {
		t.Fatalf("first call: %+v, %v; want allowed", d, err)
	}
	if d, err := lim.Allow(ctx, "k"); err != nil || d.Allowed {
		t.Fatalf("second call: %+v, %v; want denied", d, err)
	}
	if err := lim.Reset(ctx, "k"); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("Reset = %v, want storage.ErrUnavailable", err)
	}
	if d, err := lim.Allow(ctx, "k"); err != nil || !d.Allowed {
		t.Errorf("after a Reset whose delete landed: %+v, %v; want allowed", d, err)
	}
}
