package conformance

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-go/sluice/storage"
)

func TestRunLimiterReference(t *testing.T) {
	RunLimiter(t, refFactory(faults{}))
}

// TestLimiterChecksCatchBrokenStores requires each limiter check aimed at a
// broken store to fail on it, so that RunLimiter is known to be able to
// fail.
func TestLimiterChecksCatchBrokenStores(t *testing.T) {
	checks := make(map[string]limiterCheck)
	for _, c := range limiterChecks {
		checks[c.name] = c
	}
	for _, b := range []struct {
		name   string
		faults faults
		fails  []string
	}{
		{"CompareAndSwap ignores expected", faults{ignoreExpected: true}, []string{"TwoHandlesShareExactly"}},
		{"CompareAndSwap is not atomic", faults{notAtomic: true}, []string{"TwoHandlesShareExactly"}},
		{"handles do not share a backend", faults{separateHandles: true}, []string{"TwoHandlesShareExactly"}},
		{"Delete does nothing", faults{deleteNoop: true}, []string{"Reset"}},
		{"keys are case-folded", faults{mapKey: strings.ToLower}, []string{"KeysAndNamesAreSeparate"}},
	} {
		for _, name := range b.fails {
			c, ok := checks[name]
			if !ok {
				t.Fatalf("no limiter check %s", name)
			}
			t.Run(b.name+"/"+name, func(t *testing.T) {
				if err := c.check(t.Context(), t, refFactory(b.faults)); err == nil {
					t.Errorf("a store whose %s passes %s", b.name, name)
				} else {
					t.Logf("fails as it should: %v", err)
				}
			})
		}
	}
}

// TestFactoryOfT: a factory that takes *testing.T is accepted as it is.
func TestFactoryOfT(t *testing.T) {
	ref := refFactory(faults{})
	RunLimiter(t, func(t *testing.T) storage.Store { return ref(t) })
}

// TestFactoryWithoutTB: a factory that takes nothing and returns a fresh
// store on every call is accepted; the suites call it once per test.
func TestFactoryWithoutTB(t *testing.T) {
	fresh := freshRefStores(t)
	t.Run("RunStore", func(t *testing.T) { RunStore(t, fresh) })
	t.Run("RunLimiter", func(t *testing.T) { RunLimiter(t, fresh) })
}

// TestFactoriesReturningErrors: each factory form may also return an
// error, as constructors do (memory.New aside, every driver's New or Open
// does); the suites run the same.
func TestFactoriesReturningErrors(t *testing.T) {
	ref := refFactory(faults{})
	fresh := freshRefStores(t)
	t.Run("TB", func(t *testing.T) {
		RunLimiter(t, func(tb testing.TB) (storage.Store, error) { return ref(tb), nil })
	})
	t.Run("T", func(t *testing.T) {
		RunStore(t, func(t *testing.T) (storage.Store, error) { return ref(t), nil })
	})
	t.Run("none", func(t *testing.T) {
		RunStore(t, func() (storage.Store, error) { return fresh(), nil })
	})
}

// TestFactoryErrorFailsTheTest: a factory's error fails the test that
// called it, with the error in the message.
func TestFactoryErrorFailsTheTest(t *testing.T) {
	broken := errors.New("no server")
	for name, f := range map[string]NewStore{
		"TB":   asNewStore(func(testing.TB) (storage.Store, error) { return nil, broken }),
		"none": asNewStore(func() (storage.Store, error) { return nil, broken }),
	} {
		if msg := fatalOf(t, f); !strings.Contains(msg, "no server") {
			t.Errorf("%s: the factory's error gave %q, want a fatal error saying %q", name, msg, broken)
		}
	}
}

// TestFactoryNilStoreFailsTheTest: a factory that returns a nil store and
// no error, or a nil pointer as a store, fails the test that called it,
// saying so, instead of crashing in the first check (or in the cleanup
// that closes what a factory taking nothing gave).
func TestFactoryNilStoreFailsTheTest(t *testing.T) {
	for name, f := range map[string]NewStore{
		"NewStore":    asNewStore(NewStore(func(testing.TB) storage.Store { return nil })),
		"TB":          asNewStore(func(testing.TB) (storage.Store, error) { return nil, nil }),
		"TB, typed":   asNewStore(func(testing.TB) storage.Store { return (*refStore)(nil) }),
		"none":        asNewStore(func() storage.Store { return nil }),
		"none, error": asNewStore(func() (storage.Store, error) { return (*refStore)(nil), nil }),
	} {
		if msg := fatalOf(t, f); !strings.Contains(msg, "the factory returned a nil store") {
			t.Errorf("%s: a nil store gave %q, want a fatal error saying the factory returned a nil store", name, msg)
		}
	}
}

// fatalOf calls f as a test would and returns the message of its Fatalf,
// or "" if it made none.
func fatalOf(t *testing.T, f NewStore) string {
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(rec)
	}()
	<-done
	return rec.msg
}

// fatalRecorder records a Fatalf and ends the goroutine, as testing does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper()                   {}
func (r *fatalRecorder) Cleanup(func())            {}
func (r *fatalRecorder) Fatalf(f string, a ...any) { r.msg = fmt.Sprintf(f, a...); runtime.Goexit() }

// TestFactoryWithoutTBSecondCloseErrClosed: a store whose second Close
// returns storage.ErrClosed, as the suites allow, passes through a factory
// that takes nothing (which closes it when the test ends).
func TestFactoryWithoutTBSecondCloseErrClosed(t *testing.T) {
	fresh := freshRefStores(t)
	RunStore(t, func() storage.Store { return &strictClose{Store: fresh()} })
}

// freshRefStores returns a factory that takes nothing and gives a
// reference store over a backend of its own on every call.
func freshRefStores(t *testing.T) func() storage.Store {
	ref := refFactory(faults{})
	var n atomic.Int64
	return func() storage.Store { return ref(&namedTB{TB: t, n: n.Add(1)}) }
}

// strictClose is a store whose Close after the first returns
// storage.ErrClosed.
type strictClose struct {
	storage.Store
	closed atomic.Bool
}

func (s *strictClose) Close() error {
	if s.closed.Swap(true) {
		return storage.ErrClosed
	}
	return s.Store.Close()
}

// namedTB is a distinct testing.TB for each store of freshRefStores, so
// that the reference factory gives each its own backend.
type namedTB struct {
	testing.TB
	n int64
}

// timedRef is a reference store that reports the time now gives as its
// backend's.
type timedRef struct {
	storage.Store
	now func() time.Time
}

func (s timedRef) GetTimed(ctx context.Context, key string) (storage.Record, time.Time, error) {
	rec, err := s.Get(ctx, key)
	return rec, s.now(), err
}

func (s timedRef) CompareAndSwapTimed(ctx context.Context, key string, expected uint64, value []byte, ttl time.Duration) (storage.Record, bool, time.Time, error) {
	rec, ok, err := s.CompareAndSwap(ctx, key, expected, value, ttl)
	return rec, ok, s.now(), err
}

// TestStoreClockCheck: StoreClockSharesAcrossSkew passes on a store that
// reports real time, set apart or not, and fails on one whose clock stands
// still, runs fast or goes back.
func TestStoreClockCheck(t *testing.T) {
	start := time.Now()
	var back atomic.Int64
	for _, c := range []struct {
		name string
		now  func() time.Time
		ok   bool
	}{
		{"real time", time.Now, true},
		{"real time, an hour ahead", func() time.Time { return time.Now().Add(time.Hour) }, true},
		{"a clock that stands still", func() time.Time { return start }, false},
		{"a clock ten times too fast", func() time.Time { return start.Add(10 * time.Since(start)) }, false},
		{"a clock that goes back a second on every third read", func() time.Time {
			n := back.Add(1)
			return time.Now().Add(-time.Duration(n/3) * time.Second)
		}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ref := refFactory(faults{})
			newStore := func(tb testing.TB) storage.Store { return timedRef{Store: ref(tb), now: c.now} }
			err := checkStoreClock(t.Context(), t, newStore)
			switch {
			case c.ok && err != nil:
				t.Fatalf("failed on a store with %s: %v", c.name, err)
			case !c.ok && err == nil:
				t.Fatalf("passed on a store with %s", c.name)
			}
			t.Logf("result: %v", err)
		})
	}
}
