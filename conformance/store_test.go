package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-go/sluice/storage"
)

func TestRunStoreReference(t *testing.T) {
	RunStore(t, refFactory(faults{}))
	t.Run("InPlace", func(t *testing.T) { RunStore(t, refFactory(faults{inPlace: true})) })
}

func init() {
	// The stores here close at once, or block on purpose (closeBlocks).
	closeWait = time.Second
}

// TestChecksCatchBrokenStores runs checks against stores that each break
// one promise of the contract, and requires every check aimed at a store
// to fail on it.
func TestChecksCatchBrokenStores(t *testing.T) {
	checks := make(map[string]storeCheck)
	for _, c := range storeChecks() {
		if _, dup := checks[c.name]; dup {
			t.Errorf("two checks are named %s", c.name)
		}
		checks[c.name] = c
	}
	aimed := make(map[string]bool)
	for _, b := range brokenStores() {
		for _, name := range b.fails {
			c, ok := checks[name]
			if !ok {
				t.Fatalf("broken store %q names no check %q", b.name, name)
			}
			aimed[name] = true
			t.Run(b.name+"/"+name, func(t *testing.T) {
				t.Parallel()
				budget := time.Minute
				if b.faults.ignoreExpiry || b.faults.keepTTLOnSwap {
					// The checks wait for an expiry that never comes; the
					// wait ends before ctx does, with its own report.
					budget = 1500 * time.Millisecond
				}
				ctx, cancel := context.WithTimeout(t.Context(), budget)
				defer cancel()
				err := c.run(ctx, t, refFactory(b.faults))
				if err == nil {
					t.Fatalf("check %s passed on a store whose %s", name, b.name)
				}
				if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
					t.Fatalf("check %s ran out of time instead of catching that the store's %s: %v", name, b.name, err)
				}
				t.Logf("caught: %v", err)
			})
		}
	}
	for _, c := range storeChecks() {
		if !aimed[c.name] {
			t.Errorf("no broken store is aimed at check %s: nothing shows that it can fail", c.name)
		}
	}
}

// brokenStore is a reference store with faults, and the checks that must
// catch them.
type brokenStore struct {
	name   string // completes "a store whose ..."
	faults faults
	fails  []string
}

func brokenStores() []brokenStore {
	return []brokenStore{
		{"Get of an absent key is an error", faults{absentGetErrors: true}, []string{"GetAbsentKey"}},
		{"Delete of an absent key is an error", faults{absentDeleteErrors: true}, []string{"GetAbsentKey"}},
		{"CompareAndSwap ignores expected", faults{ignoreExpected: true},
			[]string{"InsertWhenPresentConflicts", "StaleVersionConflicts", "ConcurrentIncrements", "TwoHandlesShareBackend"}},
		{"conflict returns an empty record", faults{emptyConflict: true},
			[]string{"InsertWhenPresentConflicts", "StaleVersionConflicts", "ConcurrentIncrements"}},
		{"swap returns the old record", faults{oldRecordOnSwap: true},
			[]string{"InsertWhenAbsent", "SwapWithCurrentVersion", "ConcurrentIncrements"}},
		{"swap keeps the version", faults{keepVersionOnSwap: true},
			[]string{"SwapWithCurrentVersion", "VersionsOnlyGrow"}},
		{"versions restart at 1 after Delete and expiry", faults{perKeyVersions: true},
			[]string{"VersionsOnlyGrow", "DeleteRemoves", "Expiry"}},
		{"CompareAndSwap is not atomic", faults{notAtomic: true}, []string{"ConcurrentIncrements"}},
		{"records never expire", faults{ignoreExpiry: true}, []string{"Expiry", "SwapSetsTTL", "VersionsOnlyGrow"}},
		{"CompareAndSwap ignores expiry", faults{casIgnoresExpiry: true}, []string{"Expiry"}},
		{"swap keeps the old ttl", faults{keepTTLOnSwap: true}, []string{"SwapSetsTTL"}},
		{"ttl is read in the wrong unit (a hundredth)", faults{ttlDivisor: 100}, []string{"RecordsLiveTheirTTL"}},
		{"ttl is cut at 500 ms", faults{ttlCap: 500 * time.Millisecond}, []string{"RecordsLiveTheirTTL"}},
		{"long ttls overflow into the past", faults{ttlWrapsAbove: 24 * 24 * time.Hour}, []string{"RecordsLiveTheirTTL"}},
		{"Delete does nothing", faults{deleteNoop: true}, []string{"DeleteRemoves"}},
		{"keys are cut at 512 bytes", faults{mapKey: func(k string) string { return k[:min(len(k), 512)] }},
			[]string{"KeysStayDistinct"}},
		{"keys are case-folded", faults{mapKey: strings.ToLower}, []string{"KeysStayDistinct"}},
		{"invalid UTF-8 in keys is replaced", faults{mapKey: func(k string) string { return strings.ToValidUTF8(k, "\ufffd") }},
			[]string{"KeysStayDistinct"}},
		{"Get cuts values at 4 KiB", faults{truncateGet: 4 << 10}, []string{"ValuesRoundTrip"}},
		{"swap keeps the tail of a longer value", faults{shrinkKeepsTail: true}, []string{"ValuesRoundTrip"}},
		{"empty value reads absent", faults{emptyValueAbsent: true}, []string{"ValuesRoundTrip"}},
		{"value slice is retained", faults{retainValue: true}, []string{"CallerMayReuseValue"}},
		{"swap returns the caller's slice", faults{returnValue: true}, []string{"CallerMayReuseValue"}},
		{"returned values share the store's buffer", faults{shareValues: true}, []string{"ReturnedValuesStayPut"}},
		{"versions restart once a key's record is reclaimed", faults{forgetVersionsAfter: time.Second}, []string{"VersionsGrowAfterReclaim"}},
		{"done context still writes", faults{ignoreContext: true}, []string{"DoneContextWritesNothing"}},
		{"done context's error is wrapped in ErrUnavailable", faults{wrapDoneContext: true}, []string{"DoneContextWritesNothing"}},
		{"expired records read present until a sweep a second later", faults{expiresLate: time.Second}, []string{"ExpiresOnTime"}},
		{"a write that lands as ctx ends reports ctx's bare error", faults{bareErrorAfterWrite: true}, []string{"CancelDuringCall"}},
		{"Hold reports a clock an hour behind", faults{inPlace: true, holdClockBehind: time.Hour}, []string{"InPlaceHolds"}},
		{"Hold reports a clock that stands still", faults{inPlace: true, holdClockFrozen: true}, []string{"InPlaceHolds"}},
		{"Hold reads expired records as live", faults{inPlace: true, holdIgnoresExpiry: true}, []string{"InPlaceHolds"}},
		{"Commit overwrites the Value Get returned", faults{inPlace: true, holdBufferShared: true}, []string{"InPlaceHolds"}},
		{"Commit keeps the version", faults{inPlace: true, commitKeepsVersion: true}, []string{"InPlaceHolds"}},
		{"a refused Hold stays held", faults{inPlace: true, refusedHoldLeaks: true}, []string{"InPlaceHolds"}},
		{"handles do not share a backend", faults{separateHandles: true}, []string{"TwoHandlesShareBackend"}},
		{"Close does nothing", faults{closeNoop: true}, []string{"CloseThenErrClosed"}},
		{"second Close panics", faults{closePanics: true}, []string{"CloseThenErrClosed"}},
		{"second Close blocks", faults{closeBlocks: true}, []string{"CloseThenErrClosed"}},
		{"Get, every other time, pairs a value with the version before its own", faults{tornGetEvery: 2}, []string{"ConcurrentIncrements"}},
	}
}

func TestDistinctKeys(t *testing.T) {
	seen := make(map[string]bool)
	for _, k := range distinctKeys() {
		if k == "" || len(k) > storage.MaxKeyLen {
			t.Errorf("key %s breaks what the limiter promises a driver", showKey(k))
		}
		if seen[k] {
			t.Errorf("key %s is listed twice", showKey(k))
		}
		seen[k] = true
	}
	if !seen[strings.Repeat("k", storage.MaxKeyLen)] {
		t.Errorf("no key of MaxKeyLen bytes")
	}
}

// faults are the ways a reference store can break the contract; the zero
// value is a correct store.
type faults struct {
	absentGetErrors     bool                // Get of an absent key returns an error
	absentDeleteErrors  bool                // Delete of an absent key returns an error
	ignoreExpected      bool                // CompareAndSwap always swaps
	emptyConflict       bool                // a conflict returns Record{}
	oldRecordOnSwap     bool                // a swap returns the record it replaced
	keepVersionOnSwap   bool                // a swap over a record keeps its version
	perKeyVersions      bool                // versions count per key, from 1 after Delete or expiry
	notAtomic           bool                // compare and write are two steps with a pause between
	ignoreExpiry        bool                // records never expire
	casIgnoresExpiry    bool                // Get honours expiry, CompareAndSwap does not
	keepTTLOnSwap       bool                // a swap keeps the expiry of the record it replaces
	deleteNoop          bool                // Delete does nothing
	mapKey              func(string) string // keys are stored under mapKey(key)
	truncateGet         int                 // Get returns at most this many bytes of a value
	shrinkKeepsTail     bool                // a shorter value is copied over a longer one in place
	emptyValueAbsent    bool                // Get reads an empty value as absent
	retainValue         bool                // the store keeps the caller's slice
	returnValue         bool                // a swap returns the caller's slice as its record's Value
	ignoreContext       bool                // a done context is not checked
	separateHandles     bool                // the factory's second call returns a new backend
	ttlDivisor          time.Duration       // records live ttl/ttlDivisor
	ttlCap              time.Duration       // records live at most ttlCap
	ttlWrapsAbove       time.Duration       // a ttl longer than this expires at once
	closeNoop           bool                // Close does nothing
	closePanics         bool                // a second Close panics
	closeBlocks         bool                // a second Close takes longer than closeWait
	tornGetEvery        int                 // every so many Gets, one returns its record's version minus 1
	shareValues         bool                // returned Values are the stored slice, overwritten in place
	forgetVersionsAfter time.Duration       // versions count per key, forgotten this long after the last write
	wrapDoneContext     bool                // a done context's error comes back wrapped in ErrUnavailable
	expiresLate         time.Duration       // expired records read as present this much longer
	bareErrorAfterWrite bool                // a swap whose ctx ends within 10ms of it returns ctx.Err(), written
	inPlace             bool                // the store implements storage.InPlaceStore (not a fault)
	holdClockBehind     time.Duration       // Hold reports the time this much behind
	holdClockFrozen     bool                // Hold reports the time of the backend's first Hold
	holdIgnoresExpiry   bool                // Hold's Record() includes expired records
	holdBufferShared    bool                // Get hands out and Buffer reuses the stored slice
	commitKeepsVersion  bool                // Commit over a record keeps its version
	refusedHoldLeaks    bool                // a Hold refused for a done context keeps the key held
}

// refFactory returns a NewStore for reference stores with faults f. As
// NewStore says, the first call for a tb makes a new backend and a second
// one another handle on it.
func refFactory(f faults) NewStore {
	var (
		mu       sync.Mutex
		backends = make(map[testing.TB]*refBackend)
	)
	return func(tb testing.TB) storage.Store {
		mu.Lock()
		defer mu.Unlock()
		b, ok := backends[tb]
		if !ok || f.separateHandles {
			b = &refBackend{f: f, recs: make(map[string]refRecord)}
			backends[tb] = b
			if !ok {
				tb.Cleanup(func() {
					mu.Lock()
					defer mu.Unlock()
					delete(backends, tb)
				})
			}
		}
		s := &refStore{b: b}
		tb.Cleanup(func() {
			if err := s.closeOnce(); err != nil {
				tb.Errorf("Close: %v", err)
			}
		})
		if f.inPlace {
			return refInPlace{s}
		}
		return s
	}
}

// refInPlace is a refStore with storage.InPlaceStore: a hold keeps the
// whole backend locked until Commit or Release.
type refInPlace struct{ *refStore }

var _ storage.InPlaceStore = refInPlace{}

func (s refInPlace) Hold(ctx context.Context, prefix, key string) (storage.Held, int64, error) {
	b, f := s.b, s.b.f
	if err := s.enter(ctx); err != nil {
		if f.refusedHoldLeaks && ctx.Err() != nil {
			b.mu.Lock()
		}
		return nil, 0, err
	}
	b.mu.Lock()
	h := &refHeld{b: b, key: b.key(prefix + key)}
	if r, ok := b.live(h.key, !f.holdIgnoresExpiry); ok {
		h.rec, h.stored = storage.Record{Value: r.value, Version: r.version}, r.value
	}
	now := time.Now().Add(-f.holdClockBehind)
	if f.holdClockFrozen {
		if b.frozen.IsZero() {
			b.frozen = now
		}
		now = b.frozen
	}
	return h, now.UnixNano(), nil
}

// refHeld is a key held by refInPlace.Hold, with b.mu locked.
type refHeld struct {
	b      *refBackend
	key    string
	rec    storage.Record
	stored []byte
}

func (h *refHeld) Record() storage.Record { return h.rec }

func (h *refHeld) Buffer() []byte {
	if h.b.f.holdBufferShared {
		return h.stored[:0]
	}
	return nil
}

func (h *refHeld) Commit(value []byte, expires int64) uint64 {
	b := h.b
	defer b.mu.Unlock()
	v := h.rec.Version
	if !b.f.commitKeepsVersion || v == 0 {
		b.last++
		v = b.last
	}
	if !b.f.holdBufferShared {
		value = bytes.Clone(value)
	}
	b.recs[h.key] = refRecord{value: value, version: v, expires: time.Unix(0, expires)}
	return v
}

func (h *refHeld) Release() { h.b.mu.Unlock() }

// refBackend is the shared state of reference store handles: a map with a
// store-wide version counter and real expiry.
type refBackend struct {
	f    faults
	mu   sync.Mutex
	recs map[string]refRecord
	last uint64 // the last version handed out
	// keyLast is, per key, the last version and when it was written
	// (forgetVersionsAfter).
	keyLast map[string]keyVersion
	frozen  time.Time // the clock of the first Hold (holdClockFrozen)
	gets    int       // Gets of live records so far (tornGetEvery)
}

type keyVersion struct {
	v  uint64
	at time.Time
}

type refRecord struct {
	value   []byte
	version uint64
	expires time.Time
}

// live returns the record under key unless it is absent or, when
// honourExpiry, expired (which it then removes). Call with b.mu held.
func (b *refBackend) live(key string, honourExpiry bool) (refRecord, bool) {
	r, ok := b.recs[key]
	if ok && honourExpiry && !b.f.ignoreExpiry && !time.Now().Before(r.expires.Add(b.f.expiresLate)) {
		delete(b.recs, key)
		return refRecord{}, false
	}
	return r, ok
}

func (b *refBackend) key(key string) string {
	if b.f.mapKey != nil {
		return b.f.mapKey(key)
	}
	return key
}

// refStore is one handle on a refBackend.
type refStore struct {
	b      *refBackend
	closed atomic.Bool
	closes atomic.Int32
}

var _ storage.Store = (*refStore)(nil)

func (s *refStore) enter(ctx context.Context) error {
	if s.closed.Load() {
		return fmt.Errorf("ref: %w", storage.ErrClosed)
	}
	if s.b.f.ignoreContext {
		return nil
	}
	if err := ctx.Err(); err != nil && s.b.f.wrapDoneContext {
		return fmt.Errorf("ref: %w: %w", storage.ErrUnavailable, err)
	}
	return ctx.Err()
}

func (s *refStore) Get(ctx context.Context, key string) (storage.Record, error) {
	if err := s.enter(ctx); err != nil {
		return storage.Record{}, err
	}
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.live(b.key(key), true)
	switch {
	case !ok && b.f.absentGetErrors:
		return storage.Record{}, errors.New("ref: not found")
	case !ok, len(r.value) == 0 && b.f.emptyValueAbsent:
		return storage.Record{}, nil
	}
	v := bytes.Clone(r.value)
	if b.f.shareValues || b.f.holdBufferShared {
		v = r.value
	}
	if n := b.f.truncateGet; n > 0 && len(v) > n {
		v = v[:n]
	}
	version := r.version
	if n := b.f.tornGetEvery; n > 0 {
		if b.gets++; b.gets%n == 0 {
			version--
		}
	}
	return storage.Record{Value: v, Version: version}, nil
}

func (s *refStore) CompareAndSwap(ctx context.Context, key string, expected uint64, value []byte, ttl time.Duration) (storage.Record, bool, error) {
	if err := s.enter(ctx); err != nil {
		return storage.Record{}, false, err
	}
	if s.b.f.bareErrorAfterWrite {
		rec, swapped, err := s.swap(ctx, key, expected, value, ttl)
		select {
		case <-ctx.Done():
			return storage.Record{}, false, ctx.Err() // hides the write
		case <-time.After(10 * time.Millisecond):
			return rec, swapped, err
		}
	}
	return s.swap(ctx, key, expected, value, ttl)
}

// swap is CompareAndSwap once ctx was checked.
func (s *refStore) swap(ctx context.Context, key string, expected uint64, value []byte, ttl time.Duration) (storage.Record, bool, error) {
	b, f := s.b, s.b.f
	key = b.key(key)
	b.mu.Lock()
	defer b.mu.Unlock()
	cur, ok := b.live(key, !f.casIgnoresExpiry)
	current := storage.Record{Value: bytes.Clone(cur.value), Version: cur.version}
	if cur.version != expected && !f.ignoreExpected {
		if f.emptyConflict {
			current = storage.Record{}
		}
		return current, false, nil
	}
	if f.notAtomic {
		// A window wide enough that concurrent callers always meet in it
		// (a yield alone let a whole check pass now and then).
		b.mu.Unlock()
		time.Sleep(time.Millisecond)
		b.mu.Lock()
	}
	if f.ttlDivisor > 0 {
		ttl /= f.ttlDivisor
	}
	if f.ttlCap > 0 {
		ttl = min(ttl, f.ttlCap)
	}
	if f.ttlWrapsAbove > 0 && ttl > f.ttlWrapsAbove {
		ttl = -ttl
	}
	next := refRecord{value: bytes.Clone(value), expires: time.Now().Add(ttl)}
	switch {
	case f.perKeyVersions:
		next.version = cur.version + 1
	case f.keepVersionOnSwap && ok:
		next.version = cur.version
	case f.forgetVersionsAfter > 0:
		if b.keyLast == nil {
			b.keyLast = make(map[string]keyVersion)
		}
		kv := b.keyLast[key]
		if time.Since(kv.at) > f.forgetVersionsAfter {
			kv.v = 0
		}
		next.version = kv.v + 1
		b.keyLast[key] = keyVersion{next.version, time.Now()}
	default:
		b.last++
		next.version = b.last
	}
	if f.retainValue {
		next.value = value
	}
	if f.shrinkKeepsTail && len(cur.value) > len(value) {
		next.value = bytes.Clone(cur.value)
		copy(next.value, value)
	}
	if f.shareValues && ok && cap(cur.value) >= len(value) {
		next.value = append(cur.value[:0], value...)
	}
	if f.keepTTLOnSwap && ok {
		next.expires = cur.expires
	}
	b.recs[key] = next
	if f.oldRecordOnSwap {
		return current, true, nil
	}
	if f.returnValue {
		return storage.Record{Value: value, Version: next.version}, true, nil
	}
	return storage.Record{Value: bytes.Clone(value), Version: next.version}, true, nil
}

func (s *refStore) Delete(ctx context.Context, key string) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	b := s.b
	key = b.key(key)
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.live(key, true); !ok && b.f.absentDeleteErrors {
		return errors.New("ref: no such key")
	}
	if !b.f.deleteNoop {
		delete(b.recs, key)
	}
	return nil
}

func (s *refStore) Close() error {
	if s.closes.Add(1) > 1 && s.b.f.closePanics {
		panic("ref: close of closed store")
	}
	if s.closes.Load() > 1 && s.b.f.closeBlocks {
		time.Sleep(2 * closeWait)
	}
	return s.closeOnce()
}

// closeOnce closes the handle as the factory's cleanup does, without the
// closePanics fault.
func (s *refStore) closeOnce() error {
	if !s.b.f.closeNoop {
		s.closed.Store(true)
	}
	return nil
}

// stalledStore holds one record that never expires, and takes readDelay
// over every Get (or until ctx ends, returning ctx.Err()).
type stalledStore struct {
	storage.Store
	readDelay time.Duration
}

func (s stalledStore) Get(ctx context.Context, key string) (storage.Record, error) {
	if err := sleep(ctx, s.readDelay); err != nil {
		return storage.Record{}, err
	}
	return storage.Record{Value: []byte("v"), Version: 1}, nil
}

// TestWaitAbsentReportsPresenceWhenCtxEndsInLastRead: a wait for expiry
// whose last read is cut short by its context (reads slower than the
// margin the wait leaves on it) reports the record it still saw, not the
// context's error, which TestChecksCatchBrokenStores would take for a check
// that ran out of time.
func TestWaitAbsentReportsPresenceWhenCtxEndsInLastRead(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	err := waitAbsent(ctx, stalledStore{readDelay: 250 * time.Millisecond}, "k", time.Millisecond)
	if err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "want absent") {
		t.Fatalf("waitAbsent = %v, want the record's presence reported", err)
	}
	t.Logf("reported: %v", err)
}

// hangingStore answers one Get with a live record, then blocks every
// later Get until ctx ends.
type hangingStore struct {
	storage.Store
	reads *atomic.Int32
}

func (s hangingStore) Get(ctx context.Context, key string) (storage.Record, error) {
	if s.reads.Add(1) == 1 {
		return storage.Record{Value: []byte("v"), Version: 1}, nil
	}
	<-ctx.Done()
	return storage.Record{}, ctx.Err()
}

// TestWaitAbsentReportsHangingGet: a store that answers once, before the
// ttl, and then hangs is reported as hanging (the context's error), not as
// a store whose records never expire.
func TestWaitAbsentReportsHangingGet(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	err := waitAbsent(ctx, hangingStore{reads: new(atomic.Int32)}, "k", time.Hour)
	if !errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "want absent") {
		t.Fatalf("waitAbsent = %v, want the hung read's context error", err)
	}
}
