package faultstore

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-go/sluice/storage"
)

// Op names a Store method, for FailNext and Hook.
type Op int

// The operations of a storage.Store that faults apply to.
const (
	OpGet    Op = iota + 1 // Get
	OpCAS                  // CompareAndSwap
	OpDelete               // Delete
)

// String returns the method name: "Get", "CompareAndSwap" or "Delete".
func (o Op) String() string {
	switch o {
	case OpGet:
		return "Get"
	case OpCAS:
		return "CompareAndSwap"
	case OpDelete:
		return "Delete"
	}
	return fmt.Sprintf("Op(%d)", int(o))
}

// Counts holds how many times each method was called on a Store since it
// was made or since ResetCounts. Every call counts, also one that failed,
// was cancelled or never reached the wrapped store.
type Counts struct {
	Get    int64
	CAS    int64
	Delete int64
}

// Store is a storage.Store that forwards to another one and injects the
// faults a test asks for. Make one with New.
type Store struct {
	inner storage.Store

	gets, cases, deletes atomic.Int64
	hook                 atomic.Pointer[func(Op, string)]
	closed               atomic.Bool

	mu        sync.Mutex
	failAll   error
	failNext  [OpDelete + 1]failure // indexed by Op
	latency   time.Duration
	conflicts int // CAS calls on a present key still to meet a competing write
	ambiguous int // CAS calls still to lose their reply
}

type failure struct {
	n   int
	err error
}

var _ storage.Store = (*Store)(nil)

// New returns a Store that forwards every call to inner and injects no
// fault until told to.
func New(inner storage.Store) *Store {
	return &Store{inner: inner}
}

// Calls returns the number of calls of each method so far.
func (s *Store) Calls() Counts {
	return Counts{Get: s.gets.Load(), CAS: s.cases.Load(), Delete: s.deletes.Load()}
}

// ResetCounts sets every call counter back to zero.
func (s *Store) ResetCounts() {
	s.gets.Store(0)
	s.cases.Store(0)
	s.deletes.Store(0)
}

// FailAll makes every later call return err, unchanged, without reaching
// the wrapped store, until FailAll(nil). It takes precedence over FailNext,
// whose counts it does not consume.
func (s *Store) FailAll(err error) {
	s.mu.Lock()
	s.failAll = err
	s.mu.Unlock()
}

// FailNext makes the next n calls of op return err, unchanged, without
// reaching the wrapped store. It replaces an earlier FailNext for the same
// op; n <= 0 or a nil err clears it, and an op other than OpGet, OpCAS or
// OpDelete is ignored. Use an error wrapping
// storage.ErrUnavailable to imitate a backend that is down.
func (s *Store) FailNext(op Op, n int, err error) {
	if op < OpGet || op > OpDelete {
		return
	}
	if err == nil || n < 0 {
		n = 0
	}
	s.mu.Lock()
	s.failNext[op] = failure{n: n, err: err}
	s.mu.Unlock()
}

// SetLatency makes every later call wait d before it does anything else, as
// a slow network would. If ctx ends during the wait the call returns
// ctx.Err() and writes nothing. Zero or a negative d removes the latency.
func (s *Store) SetLatency(d time.Duration) {
	s.mu.Lock()
	s.latency = max(d, 0)
	s.mu.Unlock()
}

// ConflictNext makes the next n CompareAndSwap calls that find their key
// present meet a competing write, as if another process had written the
// key between the caller's read and its swap.
//
// Just before such a call reaches the wrapped store, the Store reads the
// key and writes the same bytes back with a CompareAndSwap on the version
// it read (with the time to live of the intercepted call), so the version
// grows while the value stays the same. The caller's swap then fails with
// the new record, exactly as the contract says, and its retry succeeds
// unless more conflicts are pending.
//
// A call that finds the key absent or expired meets no competing write and
// does not use up one of the n: inserting a record would change what the
// caller's next decision sees, not only its version. So n counts injected
// conflicts, not calls. n <= 0 clears it.
func (s *Store) ConflictNext(n int) {
	s.mu.Lock()
	s.conflicts = max(n, 0)
	s.mu.Unlock()
}

// AmbiguousNext makes the next n CompareAndSwap calls lose their reply: the
// call reaches the wrapped store and takes effect there (it swaps if the
// version matches), and the caller then gets an error wrapping
// storage.ErrUnavailable, as when a network times out after the request
// was sent. If the wrapped store itself fails, its error is returned
// instead (the call still uses up one of the n). n <= 0 clears it.
func (s *Store) AmbiguousNext(n int) {
	s.mu.Lock()
	s.ambiguous = max(n, 0)
	s.mu.Unlock()
}

// Hook sets a function called at the start of every call, after it is
// counted and before latency or faults, with the operation and the key.
// It runs on the caller's goroutine with no lock held, so it may block (to
// hold a call at a chosen point) or record what it sees; it must be safe
// for concurrent use if the store is. A nil f removes the hook.
func (s *Store) Hook(f func(op Op, key string)) {
	if f == nil {
		s.hook.Store(nil)
		return
	}
	s.hook.Store(&f)
}

// Get returns the wrapped store's record for key, unless a fault applies.
func (s *Store) Get(ctx context.Context, key string) (storage.Record, error) {
	s.gets.Add(1)
	if _, err := s.enter(ctx, OpGet, key); err != nil {
		return storage.Record{}, err
	}
	return s.inner.Get(ctx, key)
}

// CompareAndSwap forwards to the wrapped store, unless a fault applies;
// ConflictNext and AmbiguousNext act here.
func (s *Store) CompareAndSwap(ctx context.Context, key string, expected uint64, value []byte, ttl time.Duration) (storage.Record, bool, error) {
	s.cases.Add(1)
	f, err := s.enter(ctx, OpCAS, key)
	if err != nil {
		return storage.Record{}, false, err
	}
	if f.conflict {
		if err := s.compete(ctx, key, ttl); err != nil {
			return storage.Record{}, false, err
		}
	}
	rec, swapped, err := s.inner.CompareAndSwap(ctx, key, expected, value, ttl)
	if f.ambiguous && err == nil {
		return storage.Record{}, false, fmt.Errorf("faultstore: cas %q: reply lost after the write was sent: %w", key, storage.ErrUnavailable)
	}
	return rec, swapped, err
}

// Delete forwards to the wrapped store, unless a fault applies.
func (s *Store) Delete(ctx context.Context, key string) error {
	s.deletes.Add(1)
	if _, err := s.enter(ctx, OpDelete, key); err != nil {
		return err
	}
	return s.inner.Delete(ctx, key)
}

// Close marks the Store closed: later calls return an error wrapping
// storage.ErrClosed. It does not close the wrapped store, which belongs to
// whoever made it. Close is idempotent and returns nil.
func (s *Store) Close() error {
	s.closed.Store(true)
	return nil
}

// casFaults says which CompareAndSwap faults one call takes.
type casFaults struct {
	conflict, ambiguous bool
}

// enter runs the steps every call shares: hook, latency, closed check and
// injected errors. For OpCAS it also reserves the conflict and ambiguity
// faults the call must apply.
func (s *Store) enter(ctx context.Context, op Op, key string) (casFaults, error) {
	if h := s.hook.Load(); h != nil {
		(*h)(op, key)
	}
	s.mu.Lock()
	d := s.latency
	s.mu.Unlock()
	if d > 0 {
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return casFaults{}, ctx.Err()
		case <-t.C:
		}
	}
	if s.closed.Load() {
		return casFaults{}, fmt.Errorf("faultstore: %s %q: %w", op, key, storage.ErrClosed)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failAll != nil {
		return casFaults{}, s.failAll
	}
	if f := &s.failNext[op]; f.n > 0 {
		f.n--
		return casFaults{}, f.err
	}
	var cf casFaults
	if op == OpCAS {
		cf.conflict = s.conflicts > 0
		if s.ambiguous > 0 {
			s.ambiguous--
			cf.ambiguous = true
		}
	}
	return cf, nil
}

// compete writes key's current bytes back under a new version, as another
// process would, if the key is present and a conflict is still pending.
func (s *Store) compete(ctx context.Context, key string, ttl time.Duration) error {
	rec, err := s.inner.Get(ctx, key)
	if err != nil || rec.Version == 0 {
		return err
	}
	s.mu.Lock()
	if s.conflicts == 0 {
		s.mu.Unlock()
		return nil
	}
	s.conflicts--
	s.mu.Unlock()
	_, _, err = s.inner.CompareAndSwap(ctx, key, rec.Version, rec.Value, ttl)
	return err
}
