// Package conformance holds the suites that prove a storage driver: every
// driver in sluice runs them, and so can anyone's.
//
// A driver's test file calls the suites with a factory:
//
//	func newStore(tb testing.TB) storage.Store { ... }
//
//	func TestConformance(t *testing.T) {
//		conformance.RunStore(t, newStore)
//		conformance.RunLimiter(t, newStore)
//	}
//
//	func BenchmarkLimiter(b *testing.B) {
//		conformance.RunBenchmarks(b, newStore)
//	}
//
// RunStore proves the storage contract itself; RunLimiter proves the
// limiter's semantics on top of the driver (exact counts, Decision fields,
// refunds, the store clock for drivers that report one); RunBenchmarks
// measures decisions on a hot key and over many keys. A factory may take a
// testing.TB or a *testing.T, or nothing, and may return an error with the
// store (see Factory); NewStore says how it is called.
//
// Run them with -race: the suites hammer one key from many goroutines and
// rely on the race detector to catch unsynchronised state in the driver. A
// pass proves that the driver keeps the contract documented in package
// storage (atomic compare-and-swap, growing versions, expiry, byte-exact
// values, context handling) and that the limiter built on it admits
// exactly what package limiter documents.
package conformance

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sluice-go/sluice/internal/typednil"
	"github.com/sluice-go/sluice/storage"
)

// NewStore returns a store for the test or benchmark tb.
//
// The first call with a given tb returns a fresh store isolated from every
// other test (its own key prefix, table or file); a second call with the
// same tb returns another handle over the same backend and namespace, so
// that the suites can check that two clients see each other's writes (for
// the memory driver, the same store). The factory closes what it opened
// with tb.Cleanup; the suites never close a store they did not open
// themselves. If the backend is missing, the factory skips tb (or fails it,
// as its own policy says).
type NewStore func(tb testing.TB) storage.Store

// Factory is what RunStore and RunLimiter accept: a NewStore, or a plain
// func(tb testing.TB) storage.Store or func(t *testing.T) storage.Store,
// with the same rules; or a func() storage.Store that returns a fresh store
// of its own on every call (func() storage.Store { return memory.New() },
// say), which the suites then call once per test, use wherever they need a
// second handle, and close when the test ends. Each of the last three may
// also return an error with the store, as constructors do; an error fails
// the test. Those that take a testing.TB or a *testing.T follow NewStore's
// rules: a second call in the same test must give a handle on the same
// backend, so one that returns memory.New() every time fails the check
// that two handles share it.
type Factory interface {
	NewStore | func(testing.TB) storage.Store | func(*testing.T) storage.Store | func() storage.Store |
		func(testing.TB) (storage.Store, error) | func(*testing.T) (storage.Store, error) | func() (storage.Store, error)
}

// asNewStore turns any Factory into a NewStore (nil for a nil one) that
// fails the test when the factory gives a nil store.
func asNewStore[F Factory](f F) NewStore {
	ns := anyNewStore(f)
	if ns == nil {
		return nil
	}
	return func(tb testing.TB) storage.Store {
		tb.Helper()
		return notNil(tb, ns(tb))
	}
}

// notNil returns s, or fails tb when s is nil, or a nil pointer in the
// interface, whose methods the suites would call.
func notNil(tb testing.TB, s storage.Store) storage.Store {
	tb.Helper()
	if typednil.Is(s) {
		tb.Fatalf("conformance: the factory returned a nil store (%T) and no error", s)
	}
	return s
}

// anyNewStore is asNewStore without the check of the store.
func anyNewStore[F Factory](f F) NewStore {
	switch f := any(f).(type) {
	case func(testing.TB) (storage.Store, error):
		if f == nil {
			return nil
		}
		return func(tb testing.TB) storage.Store { s, err := f(tb); return must(tb, s, err) }
	case func(*testing.T) (storage.Store, error):
		if f == nil {
			return nil
		}
		return anyNewStore(func(t *testing.T) storage.Store { s, err := f(t); return must(t, s, err) })
	case func() (storage.Store, error):
		if f == nil {
			return nil
		}
		return oncePerTest(func(tb testing.TB) storage.Store { s, err := f(); return must(tb, s, err) })
	case NewStore:
		return f
	case func(testing.TB) storage.Store:
		if f == nil {
			return nil
		}
		return f
	case func(*testing.T) storage.Store:
		if f == nil {
			return nil
		}
		return func(tb testing.TB) storage.Store {
			t, ok := tb.(*testing.T)
			if !ok {
				tb.Fatalf("conformance: the factory takes a *testing.T, called from a %T", tb)
			}
			return f(t)
		}
	case func() storage.Store:
		if f == nil {
			return nil
		}
		return oncePerTest(func(testing.TB) storage.Store { return f() })
	}
	return nil
}

// must returns s, or fails tb with err.
func must(tb testing.TB, s storage.Store, err error) storage.Store {
	tb.Helper()
	if err != nil {
		tb.Fatalf("conformance: the factory failed: %v", err)
	}
	return s
}

// oncePerTest returns a NewStore that opens one store per test with open,
// returns it again for every call of the same test, and closes it when the
// test ends.
func oncePerTest(open func(tb testing.TB) storage.Store) NewStore {
	var (
		mu     sync.Mutex
		stores = make(map[testing.TB]storage.Store)
	)
	return func(tb testing.TB) storage.Store {
		mu.Lock()
		defer mu.Unlock()
		if s, ok := stores[tb]; ok {
			return s
		}
		s := notNil(tb, open(tb))
		stores[tb] = s
		tb.Cleanup(func() {
			mu.Lock()
			delete(stores, tb)
			mu.Unlock()
			if err := closeWithin(s, closeWait); err != nil && !errors.Is(err, storage.ErrClosed) { // a suite may have closed it
				tb.Errorf("conformance: Close: %v", err)
			}
		})
		return s
	}
}

// closeWait bounds each Close the suites make, so that a Close that hangs
// fails the test with a message rather than at the test binary's timeout.
// It is a variable for the package's own tests only.
var closeWait = 30 * time.Second

// closeWithin calls s.Close, turning a panic into an error, and gives up
// waiting for it after d (leaving it to return in its own time).
func closeWithin(s storage.Store, d time.Duration) error {
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("panic: %v", p)
			}
		}()
		done <- s.Close()
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("Close has not returned after %v", d)
	}
}
