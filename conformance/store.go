package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/storage"
)

// Times the store checks use. The suite runs on real time because drivers
// expire records by the clock of their backend.
const (
	// longTTL is the time to live of records that must outlive a check.
	longTTL = time.Minute
	// shortTTL is the time to live of records whose expiry a check observes.
	shortTTL = 150 * time.Millisecond
	// refreshTTL is the first time to live of a record whose swap must
	// lengthen it; it leaves room for two calls before it runs out.
	refreshTTL = 400 * time.Millisecond
	// liveTTL is the time to live of a record that a check reads back
	// until shortly before it runs out (liveMargin before).
	liveTTL    = 2 * time.Second
	liveMargin = 250 * time.Millisecond
	// longestTTL is the longest time to live the limiter asks for: the
	// longest Period, plus a margin.
	longestTTL = limiter.MaxPeriod + time.Minute
	// expiryBound is how long past its time to live a record may still
	// read as present before a check fails.
	expiryBound = 3 * time.Second
	// promptExpiry is how long past its time to live a record may read
	// as present in ExpiresOnTime, which reads it once, before a sweeper
	// running every second or so is likely to have removed it.
	promptExpiry = 250 * time.Millisecond
	// cutCalls is the number of calls CancelDuringCall cuts short: call i
	// after i*i*cutStep, from 0 to about 9 ms, finely at first, where a
	// local server's round trip ends.
	cutCalls = 300
	cutStep  = 100 * time.Nanosecond
	// clockSlack is how much less than the system's clock a store's clock
	// may move between two reads.
	clockSlack = 50 * time.Millisecond
	// holdWait is how long InPlaceHolds waits for a Hold that nothing
	// else holds.
	holdWait = 5 * time.Second
	// pollEvery is the pause between two reads while waiting for expiry.
	pollEvery = 10 * time.Millisecond
	// deadlineMargin is the time a wait for expiry leaves on its context
	// for the last read and the report.
	deadlineMargin = 100 * time.Millisecond
	// backOffMax bounds the random pause of a goroutine that keeps losing
	// compare-and-swap races (see backOff).
	backOffMax = 100 * time.Millisecond
	// checkTimeout bounds one check, so that a hung driver fails with a
	// message rather than the test binary's timeout.
	checkTimeout = 2 * time.Minute
)

// RunStore runs the storage conformance suite against the driver built by
// factory: one subtest per behaviour of the contract in package storage,
// each on a fresh store.
//
// A pass proves that the driver:
//
//   - reads an absent key as Version 0 with an empty Value and a nil error,
//     and deletes an absent key without error;
//   - inserts with expected version 0 only when the key is absent, and
//     swaps only when expected is the current version, returning the new
//     record (the value written, a greater version) on success and the
//     exact current record, swapped false and a nil error on conflict;
//   - gives every successful write a version greater than any the key had,
//     also after Delete, after expiry, a few seconds after expiry (when a
//     sweeper may have reclaimed the record), and through another handle;
//   - compares and swaps atomically: 32 goroutines that each add 1 to a
//     counter 200 times, retrying from the record a conflict returns, end
//     at exactly 6400 with every intermediate value written once, while
//     Get, called meanwhile, reads only records that a swap wrote, whole;
//   - expires records by their time to live (a record written with a
//     150 ms ttl reads absent, and CompareAndSwap with expected 0 succeeds
//     on it, within a few seconds), keeps records with a long ttl, and
//     sets the ttl given to a swap;
//   - keeps a record for its whole time to live: one written with a 2 s
//     ttl reads present until 1.75 s after the write began, and one
//     written with the longest ttl the limiter asks for (ten years and a
//     minute) reads present;
//   - keeps keys distinct and byte-exact: spaces, colons, braces, Unicode,
//     NUL, invalid UTF-8, case, and keys of 1 KiB and MaxKeyLen bytes
//     (two of which differ only in their last byte);
//   - stores values byte for byte, from empty (still present, Version > 0)
//     to MaxValueLen bytes, does not keep the caller's slice, and never
//     changes a Value it returned when the key is written again;
//   - reads a record as absent once its time to live has passed, by the
//     first read 250 ms after the write returned and the ttl ran out (not
//     only once a sweeper removed it), also for times to live of a
//     nanosecond and 1.5 ms;
//   - writes nothing when the context is already cancelled or past its
//     deadline, and returns the context's error as it is;
//   - never reports a conflict for a write that landed, nor an error that
//     does not wrap storage.ErrUnavailable, when a context ends during the
//     call (300 calls cut short after 0 to 9 ms);
//   - shows two handles over one backend each other's writes and conflicts
//     (the subtest TwoHandlesShareBackend calls factory twice with the
//     same tb);
//   - when it implements storage.InPlaceStore (the subtest InPlaceHolds
//     is skipped otherwise): holds an absent or expired key as Version 0,
//     reports a clock within a second of the system's and moving with it,
//     commits a value
//     built in its Buffer with a greater version that Get and
//     CompareAndSwap then see, leaves the record as it was on Release,
//     expires a committed record at the instant given (by the first read
//     250 ms later), never changes a Value Get returned, and refuses a
//     done context without holding anything;
//   - after Close, fails every call with an error matching
//     storage.ErrClosed, and accepts a second Close.
//
// Run it with -race: the concurrent subtests rely on the race detector to
// catch unsynchronised state in the driver.
//
// RunStore calls factory once in each subtest (twice in
// TwoHandlesShareBackend) and never closes a store it did not open, except
// in CloseThenErrClosed, where it closes the handle under test; the
// factory's cleanup then closes it again.
//
// The subtests run one after another, on real time: about six seconds of
// waiting for records to expire in all (most of it in
// VersionsGrowAfterReclaim, RecordsLiveTheirTTL and ExpiresOnTime), plus
// some seven thousand contended compare-and-swap calls with reads among
// them: with -race on a busy two-core machine, the whole suite took 7 s
// on the memory driver, 9 s on bbolt and against a local Redis, and 15 s
// against a local PostgreSQL. Their names are stable, so a factory that cannot
// serve one (a backend too slow for ConcurrentIncrements, say) may skip it
// by tb.Name().
func RunStore[F Factory](t *testing.T, factory F) {
	t.Helper()
	newStore := asNewStore(factory)
	if newStore == nil {
		t.Fatal("conformance: RunStore: nil NewStore")
	}
	for _, c := range storeChecks() {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), checkTimeout)
			defer cancel()
			err := c.run(ctx, t, newStore)
			if errors.Is(err, errNotApplicable) {
				t.Skip(err)
			}
			if err != nil {
				t.Error(err)
			}
		})
	}
}

// storeCheck is one behaviour of the storage contract: run returns nil
// when the stores newStore builds show it, and an error describing the
// first departure otherwise.
type storeCheck struct {
	name string
	run  func(ctx context.Context, tb testing.TB, newStore NewStore) error
}

// storeChecks returns the checks RunStore runs, in order.
func storeChecks() []storeCheck {
	return []storeCheck{
		{"GetAbsentKey", checkAbsentKey},
		{"InsertWhenAbsent", checkInsertWhenAbsent},
		{"InsertWhenPresentConflicts", checkInsertWhenPresentConflicts},
		{"StaleVersionConflicts", checkStaleVersionConflicts},
		{"SwapWithCurrentVersion", checkSwapWithCurrentVersion},
		{"VersionsOnlyGrow", checkVersionsOnlyGrow},
		{"ConcurrentIncrements", checkConcurrentIncrements},
		{"Expiry", checkExpiry},
		{"ExpiresOnTime", checkExpiresOnTime},
		{"SwapSetsTTL", checkSwapSetsTTL},
		{"RecordsLiveTheirTTL", checkRecordsLiveTheirTTL},
		{"DeleteRemoves", checkDeleteRemoves},
		{"KeysStayDistinct", checkKeysStayDistinct},
		{"ValuesRoundTrip", checkValuesRoundTrip},
		{"CallerMayReuseValue", checkCallerMayReuseValue},
		{"ReturnedValuesStayPut", checkReturnedValuesStayPut},
		{"VersionsGrowAfterReclaim", checkVersionsGrowAfterReclaim},
		{"DoneContextWritesNothing", checkDoneContextWritesNothing},
		{"CancelDuringCall", checkCancelDuringCall},
		{"TwoHandlesShareBackend", checkTwoHandlesShareBackend},
		{"InPlaceHolds", checkInPlaceHolds},
		{"CloseThenErrClosed", checkCloseThenErrClosed},
	}
}

// checkAbsentKey: Get of a key never written is Version 0 with an empty
// Value, and Delete of it is not an error.
func checkAbsentKey(ctx context.Context, tb testing.TB, newStore NewStore) error {
	s := newStore(tb)
	if err := wantAbsent(ctx, s, "absent"); err != nil {
		return err
	}
	if err := s.Delete(ctx, "absent"); err != nil {
		return fmt.Errorf("Delete(%q) of an absent key: %w, want nil", "absent", err)
	}
	return wantAbsent(ctx, s, "absent")
}

// checkInsertWhenAbsent: CompareAndSwap with expected 0 creates an absent
// key and returns the record that Get then reads.
func checkInsertWhenAbsent(ctx context.Context, tb testing.TB, newStore NewStore) error {
	s := newStore(tb)
	rec, err := write(ctx, s, "k", 0, []byte("v1"), longTTL)
	if err != nil {
		return err
	}
	return wantRecord(ctx, s, "k", rec)
}

// checkInsertWhenPresentConflicts: CompareAndSwap with expected 0 on a
// present key is a conflict returning the current record.
func checkInsertWhenPresentConflicts(ctx context.Context, tb testing.TB, newStore NewStore) error {
	s := newStore(tb)
	cur, err := write(ctx, s, "k", 0, []byte("v1"), longTTL)
	if err != nil {
		return err
	}
	return conflict(ctx, s, "k", 0, []byte("v2"), cur)
}

// checkStaleVersionConflicts: an expected version other than the current
// one, older or newer, and a non-zero expected version on an absent key,
// are conflicts returning the current record.
func checkStaleVersionConflicts(ctx context.Context, tb testing.TB, newStore NewStore) error {
	s := newStore(tb)
	first, err := write(ctx, s, "k", 0, []byte("v1"), longTTL)
	if err != nil {
		return err
	}
	second, err := write(ctx, s, "k", first.Version, []byte("v2"), longTTL)
	if err != nil {
		return err
	}
	if err := conflict(ctx, s, "k", first.Version, []byte("stale"), second); err != nil {
		return err
	}
	if err := conflict(ctx, s, "k", second.Version+1, []byte("future"), second); err != nil {
		return err
	}
	return conflict(ctx, s, "absent", first.Version, []byte("absent"), storage.Record{})
}

// checkSwapWithCurrentVersion: CompareAndSwap with the current version
// swaps and returns the new record, again and again.
func checkSwapWithCurrentVersion(ctx context.Context, tb testing.TB, newStore NewStore) error {
	s := newStore(tb)
	rec, err := write(ctx, s, "k", 0, []byte("v0"), longTTL)
	if err != nil {
		return err
	}
	for i := 1; i <= 3; i++ {
		if rec, err = write(ctx, s, "k", rec.Version, fmt.Appendf(nil, "v%d", i), longTTL); err != nil {
			return err
		}
		if err := wantRecord(ctx, s, "k", rec); err != nil {
			return err
		}
	}
	return nil
}

// checkVersionsOnlyGrow: every successful write of a key gets a version
// above any the key had, also when the key is recreated after Delete and
// after expiry.
func checkVersionsOnlyGrow(ctx context.Context, tb testing.TB, newStore NewStore) error {
	s := newStore(tb)
	var highest uint64
	step := func(when string, expected uint64, value string, ttl time.Duration) error {
		rec, err := write(ctx, s, "k", expected, []byte(value), ttl)
		if err != nil {
			return fmt.Errorf("%s: %w", when, err)
		}
		if rec.Version <= highest {
			return fmt.Errorf("%s: %s swapped with Version %d, want a version above %d, the highest the key has had",
				when, casCall("k", expected, []byte(value)), rec.Version, highest)
		}
		highest = rec.Version
		return nil
	}
	if err := step("first insert", 0, "a", longTTL); err != nil {
		return err
	}
	for i := range 3 {
		if err := step(fmt.Sprintf("swap %d", i+1), highest, "b", longTTL); err != nil {
			return err
		}
	}
	if err := s.Delete(ctx, "k"); err != nil {
		return fmt.Errorf("Delete(%q): %w", "k", err)
	}
	if err := step("insert after Delete", 0, "c", longTTL); err != nil {
		return err
	}
	if err := step("swap to a short ttl", highest, "d", shortTTL); err != nil {
		return err
	}
	if err := waitAbsent(ctx, s, "k", shortTTL); err != nil {
		return err
	}
	return step("insert after expiry", 0, "e", longTTL)
}

// checkConcurrentIncrements: 32 goroutines each add 1 to one counter 200
// times with CompareAndSwap alone; the counter ends at exactly 6400. Gets
// made meanwhile read only records that the swaps wrote.
func checkConcurrentIncrements(ctx context.Context, tb testing.TB, newStore NewStore) error {
	return increments(ctx, []storage.Store{newStore(tb)}, "counter", 32, 200)
}

// checkExpiry: a record reads absent after its time to live, CompareAndSwap
// treats it as absent (expected 0 swaps, its old version conflicts), and a
// record with a long time to live stays.
func checkExpiry(ctx context.Context, tb testing.TB, newStore NewStore) error {
	s := newStore(tb)
	long, err := write(ctx, s, "long", 0, []byte("stays"), longTTL)
	if err != nil {
		return err
	}
	// "blind" is written before "polled", so it has expired once "polled"
	// reads absent; it is then written without a Get in between.
	blind, err := write(ctx, s, "blind", 0, []byte("b1"), shortTTL)
	if err != nil {
		return err
	}
	polled, err := write(ctx, s, "polled", 0, []byte("p1"), shortTTL)
	if err != nil {
		return err
	}
	if err := waitAbsent(ctx, s, "polled", shortTTL); err != nil {
		return err
	}
	if _, err := recreate(ctx, s, "blind", blind, "expiry"); err != nil {
		return err
	}
	if err := conflict(ctx, s, "polled", polled.Version, []byte("p2"), storage.Record{}); err != nil {
		return fmt.Errorf("the expired record's version must not match: %w", err)
	}
	if err := wantRecord(ctx, s, "long", long); err != nil {
		return fmt.Errorf("a record written with ttl %v: %w", longTTL, err)
	}
	return nil
}

// checkExpiresOnTime: a record reads as absent by the first Get made
// promptExpiry after its time to live has passed, counted from when the
// write returned (the backend started it before), whatever a sweeper has
// done by then: for a short time to live, and for the shortest (a
// nanosecond) and one that is not a whole number of milliseconds, which a
// driver must accept and must not turn into "no expiry".
func checkExpiresOnTime(ctx context.Context, tb testing.TB, newStore NewStore) error {
	s := newStore(tb)
	for _, ttl := range []time.Duration{shortTTL, time.Nanosecond, 1500 * time.Microsecond} {
		key := "ttl-" + ttl.String()
		if _, err := write(ctx, s, key, 0, []byte("v"), ttl); err != nil {
			return err
		}
		start := time.Now()
		if err := sleep(ctx, ttl+promptExpiry); err != nil {
			return err
		}
		if err := wantAbsent(ctx, s, key); err != nil {
			return fmt.Errorf("%v after a write with ttl %v returned: %w", time.Since(start).Round(time.Millisecond), ttl, err)
		}
	}
	return nil
}

// checkSwapSetsTTL: a successful swap replaces the record's time to live
// with the one it was given, shorter or longer.
func checkSwapSetsTTL(ctx context.Context, tb testing.TB, newStore NewStore) error {
	s := newStore(tb)
	short, err := write(ctx, s, "shortened", 0, []byte("a1"), longTTL)
	if err != nil {
		return err
	}
	if _, err := write(ctx, s, "shortened", short.Version, []byte("a2"), shortTTL); err != nil {
		return err
	}
	long, err := write(ctx, s, "lengthened", 0, []byte("b1"), refreshTTL)
	if err != nil {
		return err
	}
	// "marker" is written after the first write of "lengthened", so it
	// reads absent only once that write's ttl has run out.
	if _, err := write(ctx, s, "marker", 0, []byte("m"), refreshTTL); err != nil {
		return err
	}
	if long, err = write(ctx, s, "lengthened", long.Version, []byte("b2"), longTTL); err != nil {
		return err
	}
	if err := waitAbsent(ctx, s, "shortened", shortTTL); err != nil {
		return fmt.Errorf("a swap with ttl %v must replace the ttl %v of the record it replaced: %w", shortTTL, longTTL, err)
	}
	if err := waitAbsent(ctx, s, "marker", refreshTTL); err != nil {
		return err
	}
	if err := wantRecord(ctx, s, "lengthened", long); err != nil {
		return fmt.Errorf("a swap with ttl %v must replace the ttl %v of the record it replaced: %w", longTTL, refreshTTL, err)
	}
	return nil
}

// checkRecordsLiveTheirTTL: a record reads present for its whole time to
// live, not only until some shorter time (a ttl read in the wrong unit, or
// cut short), and the longest time to live the limiter asks for is kept
// (not overflowed into the past).
func checkRecordsLiveTheirTTL(ctx context.Context, tb testing.TB, newStore NewStore) error {
	s := newStore(tb)
	start := time.Now()
	lives, err := write(ctx, s, "lives", 0, []byte("l1"), liveTTL)
	if err != nil {
		return err
	}
	decade, err := write(ctx, s, "decade", 0, []byte("d1"), longestTTL)
	if err != nil {
		return err
	}
	// The store's clock started the ttl after start, so the record must
	// read present at least until start+liveTTL; liveMargin allows for the
	// backend's expiry resolution.
	for time.Since(start) < liveTTL-liveMargin {
		if err := wantRecord(ctx, s, "lives", lives); err != nil {
			return fmt.Errorf("%v after a write with ttl %v began: %w", time.Since(start).Round(time.Millisecond), liveTTL, err)
		}
		if err := sleep(ctx, pollEvery); err != nil {
			return err
		}
	}
	if err := wantRecord(ctx, s, "decade", decade); err != nil {
		return fmt.Errorf("a record written with ttl %v: %w", longestTTL, err)
	}
	return nil
}

// checkDeleteRemoves: Delete removes one key and no other; the old version
// then conflicts, and the key can be created again.
func checkDeleteRemoves(ctx context.Context, tb testing.TB, newStore NewStore) error {
	s := newStore(tb)
	gone, err := write(ctx, s, "gone", 0, []byte("g1"), longTTL)
	if err != nil {
		return err
	}
	kept, err := write(ctx, s, "kept", 0, []byte("k1"), longTTL)
	if err != nil {
		return err
	}
	if err := s.Delete(ctx, "gone"); err != nil {
		return fmt.Errorf("Delete(%q): %w", "gone", err)
	}
	if err := wantAbsent(ctx, s, "gone"); err != nil {
		return fmt.Errorf("after Delete: %w", err)
	}
	if err := wantRecord(ctx, s, "kept", kept); err != nil {
		return fmt.Errorf("after Delete of another key: %w", err)
	}
	if err := conflict(ctx, s, "gone", gone.Version, []byte("g2"), storage.Record{}); err != nil {
		return fmt.Errorf("after Delete: %w", err)
	}
	again, err := recreate(ctx, s, "gone", gone, "Delete")
	if err != nil {
		return err
	}
	return wantRecord(ctx, s, "gone", again)
}

// recreate inserts key, whose record old is gone after what happened, and
// checks that the new version is above old's.
func recreate(ctx context.Context, s storage.Store, key string, old storage.Record, after string) (storage.Record, error) {
	rec, err := write(ctx, s, key, 0, []byte("recreated"), longTTL)
	if err != nil {
		return rec, fmt.Errorf("after %s: %w", after, err)
	}
	if rec.Version <= old.Version {
		return rec, fmt.Errorf("%s recreated after %s with Version %d, want a version above %d, the one it had",
			showKey(key), after, rec.Version, old.Version)
	}
	return rec, nil
}

// distinctKeys returns keys that a driver must keep apart: near-collisions
// for the separators and escapes drivers are tempted to use, Unicode that
// normalises alike, case, invalid UTF-8 and long keys.
func distinctKeys() []string {
	long := strings.Repeat("k", 1023)
	return []string{
		"a", "b", "ab", "a:b", "a:", ":b", "b:", "a::b", "a:b:", "A",
		"a b", " a", "a ", " ", "a\tb", "a\nb", "a\rb", "\x00", "a\x00b", "a\x00", "\x01", "\x7f",
		"{tag}x", "{tag}y", "{tag}", "{}", "{}x", "x{tag}", "{tag", "tag}",
		"a/b", `a\b`, "a.b", "a*b", "a?b", "[a]b", "%s", "%", "'", `"`, "a;b", "--", "$1", "a,b", "a=b",
		"ключ", "键", "🚦 limit", "e\u0301", "\u00e9", "\ufffd",
		"\xff\xfe", "\xfe\xff",
		long + "x", long + "y", strings.Repeat("k", storage.MaxKeyLen),
		// Two keys of MaxKeyLen bytes that differ only in the last byte:
		// a driver that cuts keys anywhere short of MaxKeyLen merges them.
		strings.Repeat("m", storage.MaxKeyLen-1) + "x", strings.Repeat("m", storage.MaxKeyLen-1) + "y",
	}
}

// checkKeysStayDistinct: every key of distinctKeys is its own record, read
// back as written, and deleting some leaves the others.
func checkKeysStayDistinct(ctx context.Context, tb testing.TB, newStore NewStore) error {
	s := newStore(tb)
	keys := distinctKeys()
	recs := make([]storage.Record, len(keys))
	for i, k := range keys {
		rec, err := write(ctx, s, k, 0, fmt.Appendf(nil, "value %d", i), longTTL)
		if err != nil {
			return fmt.Errorf("key %d of %d, each written once (does it collide with an earlier one?): %w", i+1, len(keys), err)
		}
		recs[i] = rec
	}
	for i, k := range keys {
		if err := wantRecord(ctx, s, k, recs[i]); err != nil {
			return err
		}
	}
	for i, k := range keys {
		if i%2 == 1 {
			if err := s.Delete(ctx, k); err != nil {
				return fmt.Errorf("Delete(%s): %w", showKey(k), err)
			}
		}
	}
	for i, k := range keys {
		var err error
		if i%2 == 1 {
			err = wantAbsent(ctx, s, k)
		} else {
			err = wantRecord(ctx, s, k, recs[i])
		}
		if err != nil {
			return fmt.Errorf("after deleting every other key: %w", err)
		}
	}
	return nil
}

// checkValuesRoundTrip: values come back byte for byte: empty and nil
// (present, Version > 0), binary, MaxValueLen bytes, and a short value
// written over a long one and the reverse.
func checkValuesRoundTrip(ctx context.Context, tb testing.TB, newStore NewStore) error {
	s := newStore(tb)
	big := make([]byte, storage.MaxValueLen)
	_, _ = rand.NewChaCha8([32]byte{'s', 'l', 'u', 'i', 'c', 'e'}).Read(big)
	steps := []struct {
		key   string
		value []byte
	}{
		{"empty", []byte{}},
		{"nil", nil},
		{"binary", []byte{0, 0xff, 0, '\n', 0x80, 0xc3, 0x28, 0}},
		{"big", big},
		{"big", []byte("small")}, // no bytes of the long value may remain
		{"empty", big},
		{"empty", []byte{}},
	}
	versions := make(map[string]uint64)
	for _, st := range steps {
		rec, err := write(ctx, s, st.key, versions[st.key], st.value, longTTL)
		if err != nil {
			return err
		}
		if err := wantRecord(ctx, s, st.key, rec); err != nil {
			return err
		}
		versions[st.key] = rec.Version
	}
	return nil
}

// checkCallerMayReuseValue: the store keeps its own copy of a value, so
// the caller may overwrite the slice it passed once the call returns;
// neither the record stored nor the one the swap returned changes.
func checkCallerMayReuseValue(ctx context.Context, tb testing.TB, newStore NewStore) error {
	s := newStore(tb)
	var version uint64
	for _, value := range []string{"inserted", "swapped"} {
		buf := []byte(value)
		rec, err := write(ctx, s, "k", version, buf, longTTL)
		if err != nil {
			return err
		}
		version = rec.Version
		for i := range buf {
			buf[i] = 'X'
		}
		if string(rec.Value) != value {
			return fmt.Errorf("the record CompareAndSwap returned holds %q once the caller overwrote the slice it passed, want %q: it must not share the caller's memory", rec.Value, value)
		}
		if err := wantRecord(ctx, s, "k", storage.Record{Value: []byte(value), Version: version}); err != nil {
			return fmt.Errorf("after the caller overwrote the slice it passed to CompareAndSwap: %w", err)
		}
	}
	return nil
}

// checkReturnedValuesStayPut: a Value the store returned (from Get, from
// a swap, from a conflict) is the caller's to keep: later writes of the
// key, of the same length or shorter, do not change it.
func checkReturnedValuesStayPut(ctx context.Context, tb testing.TB, newStore NewStore) error {
	s := newStore(tb)
	swapRec, err := write(ctx, s, "k", 0, []byte("first-value"), longTTL)
	if err != nil {
		return err
	}
	got, err := s.Get(ctx, "k")
	if err != nil {
		return fmt.Errorf("Get(%q): %w", "k", err)
	}
	conflictRec, swapped, err := s.CompareAndSwap(ctx, "k", 0, []byte("conflicting"), longTTL)
	if err != nil || swapped {
		return fmt.Errorf("%s = swapped %t, err %v; want a conflict", casCall("k", 0, []byte("conflicting")), swapped, err)
	}
	version := swapRec.Version
	for _, v := range []string{"other-value", "short", ""} {
		rec, err := write(ctx, s, "k", version, []byte(v), longTTL)
		if err != nil {
			return err
		}
		version = rec.Version
		for _, r := range []struct {
			what string
			val  []byte
		}{{"a swap", swapRec.Value}, {"Get", got.Value}, {"a conflict", conflictRec.Value}} {
			if string(r.val) != "first-value" {
				return fmt.Errorf("the Value %s returned changed from %q to %q once the key was written again with %q: a returned Value must not share the store's memory",
					r.what, "first-value", r.val, v)
			}
		}
	}
	return nil
}

// reclaimWait is how long checkVersionsGrowAfterReclaim waits after a
// record reads absent, so that a driver's sweeper (every second for the
// memory driver) has reclaimed it.
const reclaimWait = 2500 * time.Millisecond

// checkVersionsGrowAfterReclaim: a key recreated after its expired record
// was not only hidden but reclaimed (a driver that keeps versions per
// key may lose them then) gets a version above the one it had.
func checkVersionsGrowAfterReclaim(ctx context.Context, tb testing.TB, newStore NewStore) error {
	s := newStore(tb)
	old, err := write(ctx, s, "k", 0, []byte("v1"), shortTTL)
	if err != nil {
		return err
	}
	if err := waitAbsent(ctx, s, "k", shortTTL); err != nil {
		return err
	}
	if err := sleep(ctx, reclaimWait); err != nil {
		return err
	}
	_, err = recreate(ctx, s, "k", old, fmt.Sprintf("expiry and %v more", reclaimWait))
	return err
}

// checkDoneContextWritesNothing: with a context already cancelled or past
// its deadline, CompareAndSwap and Delete return the context's error as it
// is (not wrapped in storage.ErrUnavailable: nothing was written, and the
// backend did not fail) and change nothing; Get returns an error matching
// it or the record.
func checkDoneContextWritesNothing(ctx context.Context, tb testing.TB, newStore NewStore) error {
	s := newStore(tb)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	expired, cancelExpired := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancelExpired()
	for _, done := range []struct {
		name string
		ctx  context.Context
		want error
	}{
		{"cancelled", cancelled, context.Canceled},
		{"expired", expired, context.DeadlineExceeded},
	} {
		fail := func(format string, args ...any) error {
			return fmt.Errorf("with a %s context: %s", done.name, fmt.Sprintf(format, args...))
		}
		absent, present := "absent-"+done.name, "present-"+done.name
		rec, swapped, err := s.CompareAndSwap(done.ctx, absent, 0, []byte("v"), longTTL)
		if err != done.want || swapped {
			return fail("%s = %s, swapped %t, err %v; want swapped false and the context's error as it is, %v",
				casCall(absent, 0, []byte("v")), showRecord(rec), swapped, err, done.want)
		}
		if err := wantAbsent(ctx, s, absent); err != nil {
			return fail("CompareAndSwap wrote anyway: %v", err)
		}
		cur, err := write(ctx, s, present, 0, []byte("v1"), longTTL)
		if err != nil {
			return err
		}
		rec, swapped, err = s.CompareAndSwap(done.ctx, present, cur.Version, []byte("v2"), longTTL)
		if err != done.want || swapped {
			return fail("%s = %s, swapped %t, err %v; want swapped false and the context's error as it is, %v",
				casCall(present, cur.Version, []byte("v2")), showRecord(rec), swapped, err, done.want)
		}
		if err := wantRecord(ctx, s, present, cur); err != nil {
			return fail("CompareAndSwap wrote anyway: %v", err)
		}
		if err := s.Delete(done.ctx, present); err != done.want {
			return fail("Delete(%q) = %v, want the context's error as it is, %v", present, err, done.want)
		}
		if err := wantRecord(ctx, s, present, cur); err != nil {
			return fail("Delete deleted anyway: %v", err)
		}
		got, err := s.Get(done.ctx, present)
		if err != nil && !errors.Is(err, done.want) {
			return fail("Get(%q): %v, want the record or an error matching %v", present, err, done.want)
		}
		if err == nil && !sameRecord(got, cur) {
			return fail("Get(%q) = %s, want %s", present, showRecord(got), showRecord(cur))
		}
	}
	return nil
}

// checkCancelDuringCall: calls whose context ends while they run (after
// 0 to about 9 ms) may fail, but never hide a write that landed: a
// swap reported as a conflict, or as an error that does not wrap
// storage.ErrUnavailable, must not have written its value, and an error
// must match the context's. Each call's value is its own, so a read after
// it shows whether it landed.
func checkCancelDuringCall(ctx context.Context, tb testing.TB, newStore NewStore) error {
	s := newStore(tb)
	const key = "cut"
	var cur storage.Record
	for i := range cutCalls {
		cut, cancel := context.WithTimeout(ctx, time.Duration(i*i)*cutStep)
		v := fmt.Appendf(nil, "v%d", i)
		rec, swapped, err := s.CompareAndSwap(cut, key, cur.Version, v, longTTL)
		cutErr := cut.Err()
		if d, _ := cut.Deadline(); cutErr == nil && !time.Now().Before(d) {
			// Past its deadline, though its timer has not fired yet: a
			// network deadline derived from it may have fired first.
			cutErr = context.DeadlineExceeded
		}
		cancel()
		now, getErr := s.Get(ctx, key)
		if getErr != nil {
			return fmt.Errorf("Get(%s) after a call cut short: %w", showKey(key), getErr)
		}
		landed := bytes.Equal(now.Value, v)
		call := casCall(key, cur.Version, v)
		switch {
		case err == nil && swapped && !landed:
			return fmt.Errorf("%s = %s, swapped, but Get reads %s", call, showRecord(rec), showRecord(now))
		case err == nil && !swapped && landed:
			return fmt.Errorf("%s reported a conflict (%s), but its value was written: %s", call, showRecord(rec), showRecord(now))
		case err != nil && cutErr == nil:
			return fmt.Errorf("%s: %w, with its context still live", call, err)
		case err != nil && !errors.Is(err, cutErr):
			return fmt.Errorf("%s with a context that ended: %v, want an error matching %v", call, err, cutErr)
		case err != nil && landed && !errors.Is(err, storage.ErrUnavailable):
			return fmt.Errorf("%s: %v, but its value was written: an unknown outcome must wrap storage.ErrUnavailable", call, err)
		}
		cur = now
	}
	return nil
}

// checkTwoHandlesShareBackend: two handles over one backend see each
// other's writes and deletes, conflict with each other, and stay atomic
// when both increment one counter.
func checkTwoHandlesShareBackend(ctx context.Context, tb testing.TB, newStore NewStore) error {
	a, b := newStore(tb), newStore(tb)
	ra, err := write(ctx, a, "shared", 0, []byte("from a"), longTTL)
	if err != nil {
		return fmt.Errorf("first handle: %w", err)
	}
	if err := wantRecord(ctx, b, "shared", ra); err != nil {
		return fmt.Errorf("second handle, after a write through the first: %w", err)
	}
	if err := conflict(ctx, b, "shared", 0, []byte("from b"), ra); err != nil {
		return fmt.Errorf("second handle, after a write through the first: %w", err)
	}
	rb, err := write(ctx, b, "shared", ra.Version, []byte("from b"), longTTL)
	if err != nil {
		return fmt.Errorf("second handle: %w", err)
	}
	if err := conflict(ctx, a, "shared", ra.Version, []byte("stale a"), rb); err != nil {
		return fmt.Errorf("first handle, after a swap through the second: %w", err)
	}
	if err := b.Delete(ctx, "shared"); err != nil {
		return fmt.Errorf("second handle: Delete(%q): %w", "shared", err)
	}
	if err := wantAbsent(ctx, a, "shared"); err != nil {
		return fmt.Errorf("first handle, after a Delete through the second: %w", err)
	}
	// Versions grow store-wide, not per handle: a key recreated through
	// either handle gets a version above any it had through the other.
	again, err := recreate(ctx, a, "shared", rb, "a Delete through the second handle")
	if err != nil {
		return fmt.Errorf("first handle: %w", err)
	}
	if err := a.Delete(ctx, "shared"); err != nil {
		return fmt.Errorf("first handle: Delete(%q): %w", "shared", err)
	}
	if _, err := recreate(ctx, b, "shared", again, "a Delete through the first handle"); err != nil {
		return fmt.Errorf("second handle: %w", err)
	}
	return increments(ctx, []storage.Store{a, b}, "shared-counter", 8, 50)
}

// checkInPlaceHolds: the in-process interface, storage.InPlaceStore, keeps
// the promises of Store (versions that grow, expiry, Values that stay put)
// through Hold, Commit and Release, and reports the clock it expires
// records by.
func checkInPlaceHolds(ctx context.Context, tb testing.TB, newStore NewStore) error {
	s := newStore(tb)
	ip, ok := s.(storage.InPlaceStore)
	if !ok {
		return fmt.Errorf("%w: the store does not implement storage.InPlaceStore", errNotApplicable)
	}
	const prefix, key = "ns:", "k"
	hold := func(what string) (storage.Held, int64, error) {
		h, now, err := ip.Hold(ctx, prefix, key)
		if err != nil {
			return nil, 0, fmt.Errorf("Hold(%q, %q) %s: %w", prefix, key, what, err)
		}
		return h, now, nil
	}
	h, now, err := hold("of an absent key")
	if err != nil {
		return err
	}
	firstNow, firstHeld := now, time.Now()
	if r := h.Record(); r.Version != 0 || len(r.Value) != 0 {
		h.Release()
		return fmt.Errorf("Hold of an absent key: Record() = %s, want Version 0 and an empty Value", showRecord(r))
	}
	if off := time.Duration(now - time.Now().UnixNano()); off.Abs() > time.Second {
		h.Release()
		return fmt.Errorf("Hold reports the store's clock %v from the system's: it must be the clock records expire by, in Unix nanoseconds", off)
	}
	first := storage.Record{Value: []byte("one"), Version: h.Commit(append(h.Buffer(), "one"...), now+int64(longTTL))}
	if first.Version == 0 {
		return errors.New("Commit returned version 0")
	}
	if err := wantRecord(ctx, s, prefix+key, first); err != nil {
		return fmt.Errorf("after Commit: %w", err)
	}
	got, err := s.Get(ctx, prefix+key)
	if err != nil {
		return err
	}
	if h, _, err = hold("of a committed record"); err != nil {
		return err
	}
	if r := h.Record(); !sameRecord(r, first) {
		h.Release()
		return fmt.Errorf("Hold after Commit: Record() = %s, want %s", showRecord(r), showRecord(first))
	}
	h.Release()
	if err := wantRecord(ctx, s, prefix+key, first); err != nil {
		return fmt.Errorf("after Release: %w", err)
	}
	// A value of the same length, built in the Buffer, which may share the
	// held record's memory, but never that of a Value Get returned.
	if h, now, err = hold("to write again"); err != nil {
		return err
	}
	second := storage.Record{Value: []byte("two"), Version: h.Commit(append(h.Buffer(), "two"...), now+int64(shortTTL))}
	if !bytes.Equal(got.Value, first.Value) {
		return fmt.Errorf("a Value Get returned changed from %q to %q when the key was committed again", first.Value, got.Value)
	}
	if second.Version <= first.Version {
		return fmt.Errorf("Commit over version %d returned version %d, want a greater one", first.Version, second.Version)
	}
	if err := conflict(ctx, s, prefix+key, first.Version, []byte("x"), second); err != nil {
		return fmt.Errorf("after a second Commit: %w", err)
	}
	// The second record expires at now+shortTTL on the store's clock.
	if err := sleep(ctx, time.Until(time.Unix(0, now).Add(shortTTL+promptExpiry))); err != nil {
		return err
	}
	before := time.Now()
	if h, now, err = hold("of an expired record"); err != nil {
		return err
	}
	if moved, least := time.Duration(now-firstNow), before.Sub(firstHeld)-clockSlack; moved < least {
		h.Release()
		return fmt.Errorf("the clock Hold reports moved %v while %v passed: it must be the current time", moved, least+clockSlack)
	}
	if r := h.Record(); r.Version != 0 || len(r.Value) != 0 {
		h.Release()
		return fmt.Errorf("Hold past the expiry given to Commit: Record() = %s, want Version 0 and an empty Value", showRecord(r))
	}
	h.Release()
	if err := wantAbsent(ctx, s, prefix+key); err != nil {
		return fmt.Errorf("past the expiry given to Commit: %w", err)
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if h, _, err := ip.Hold(done, prefix, key); err != context.Canceled {
		if err == nil {
			h.Release()
		}
		return fmt.Errorf("Hold with a cancelled context: %v, want context.Canceled as it is", err)
	}
	// Nothing is held: another Hold does not wait.
	held := make(chan error, 1)
	go func() {
		h, _, err := hold("after a refused one")
		if err == nil {
			h.Release()
		}
		held <- err
	}()
	select {
	case err := <-held:
		return err
	case <-time.After(holdWait):
		return fmt.Errorf("Hold after one refused for a cancelled context still waits after %v: the refused Hold left the key held", holdWait)
	}
}

// checkCloseThenErrClosed: Close succeeds, a second Close is harmless, and
// every method then fails with an error matching storage.ErrClosed.
func checkCloseThenErrClosed(ctx context.Context, tb testing.TB, newStore NewStore) error {
	s := newStore(tb)
	rec, err := write(ctx, s, "k", 0, []byte("v1"), longTTL)
	if err != nil {
		return err
	}
	if err := closeWithin(s, closeWait); err != nil {
		return fmt.Errorf("Close: %w, want nil", err)
	}
	if err := closeWithin(s, closeWait); err != nil && !errors.Is(err, storage.ErrClosed) {
		return fmt.Errorf("second Close: %w, want nil or an error matching storage.ErrClosed (Close is idempotent)", err)
	}
	if got, err := s.Get(ctx, "k"); !errors.Is(err, storage.ErrClosed) {
		return fmt.Errorf("after Close: Get(%q) = %s, err %v; want an error matching storage.ErrClosed", "k", showRecord(got), err)
	}
	got, swapped, err := s.CompareAndSwap(ctx, "k", rec.Version, []byte("v2"), longTTL)
	if !errors.Is(err, storage.ErrClosed) || swapped {
		return fmt.Errorf("after Close: %s = %s, swapped %t, err %v; want swapped false and an error matching storage.ErrClosed",
			casCall("k", rec.Version, []byte("v2")), showRecord(got), swapped, err)
	}
	if err := s.Delete(ctx, "k"); !errors.Is(err, storage.ErrClosed) {
		return fmt.Errorf("after Close: Delete(%q) = %v, want an error matching storage.ErrClosed", "k", err)
	}
	return nil
}

// increments runs goroutines that each add 1 to the decimal counter under
// key each times, spread over stores, and checks that the counter ends at
// goroutines*each with every value from 1 up written by exactly one
// successful swap. The goroutines never call Get: they retry from the
// record a conflict returns, as the limiter does. Meanwhile one reader
// per store calls Get on key over and over, and every record it reads
// must be absent or one that a swap wrote, whole: a Get that is not
// synchronised with CompareAndSwap shows up here (under -race, even when
// it reads nothing torn).
func increments(ctx context.Context, stores []storage.Store, key string, goroutines, each int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
		results  = make([][]storage.Record, goroutines)
		reads    = make([][]storage.Record, len(stores))
		writing  = make(chan struct{})
		readers  sync.WaitGroup
	)
	fail := func(err error) {
		once.Do(func() {
			firstErr = err
			cancel()
		})
	}
	for i, s := range stores {
		readers.Go(func() {
			for {
				rec, err := s.Get(ctx, key)
				if err != nil {
					if ctx.Err() == nil {
						fail(fmt.Errorf("Get(%q) while %d goroutines swap it: %w", key, goroutines, err))
					}
					return
				}
				if len(reads[i]) < maxReads {
					reads[i] = append(reads[i], rec)
				}
				select {
				case <-writing:
					return
				case <-time.After(readPause):
				}
			}
		})
	}
	for g := range goroutines {
		wg.Go(func() {
			recs, err := incrementLoop(ctx, stores[g%len(stores)], key, each)
			if err != nil {
				fail(fmt.Errorf("goroutine %d of %d: %w", g+1, goroutines, err))
			}
			results[g] = recs
		})
	}
	wg.Wait()
	close(writing)
	readers.Wait()
	if firstErr != nil {
		return firstErr
	}
	total := goroutines * each
	written := make([]storage.Record, total+1) // by counter value
	for _, recs := range results {
		for _, rec := range recs {
			n, _ := parseCounter(rec.Value) // incrementLoop wrote it
			if n == 0 || n > uint64(total) {
				return fmt.Errorf("a swap wrote counter %d, outside 1..%d", n, total)
			}
			if prev := written[n]; prev.Version != 0 {
				return fmt.Errorf("two swaps wrote counter %d (Versions %d and %d): both succeeded from the same record, so CompareAndSwap is not atomic",
					n, prev.Version, rec.Version)
			}
			written[n] = rec
		}
	}
	for _, recs := range reads {
		for _, rec := range recs {
			if rec.Version == 0 && len(rec.Value) == 0 {
				continue // read before the first swap
			}
			n, err := parseCounter(rec.Value)
			if err == nil && (n == 0 || n > uint64(total)) {
				err = fmt.Errorf("counter %d, outside 1..%d", n, total)
			}
			if err != nil || written[n].Version != rec.Version {
				return fmt.Errorf("Get(%q) while %d goroutines swapped it read %s, which no swap wrote (a read not synchronised with CompareAndSwap?)",
					key, goroutines, showRecord(rec))
			}
		}
	}
	last := written[total]
	if err := wantRecord(ctx, stores[0], key, last); err != nil {
		return fmt.Errorf("after %d goroutines added 1 to %q %d times each: %w", goroutines, key, each, err)
	}
	return nil
}

// maxReads bounds the records each reader of increments keeps for the
// check, and readPause spaces its reads, so that it leaves the writers
// most of the store's time.
const (
	maxReads  = 100_000
	readPause = 100 * time.Microsecond
)

// incrementLoop adds 1 to the counter under key n times and returns the
// records of its successful swaps.
func incrementLoop(ctx context.Context, s storage.Store, key string, n int) ([]storage.Record, error) {
	var (
		rec       storage.Record // what this goroutine knows: nothing yet
		done      = make([]storage.Record, 0, n)
		conflicts int           // in a row
		took      time.Duration // by the last call
	)
	for len(done) < n {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		if conflicts > 0 {
			backOff(ctx, conflicts, took)
		}
		count, err := parseCounter(rec.Value)
		if err != nil {
			return done, err
		}
		next := strconv.AppendUint(nil, count+1, 10)
		start := time.Now()
		got, swapped, err := s.CompareAndSwap(ctx, key, rec.Version, next, longTTL)
		took = time.Since(start)
		switch {
		case err != nil:
			return done, fmt.Errorf("%s: %w", casCall(key, rec.Version, next), err)
		case swapped && (got.Version <= rec.Version || !bytes.Equal(got.Value, next)):
			return done, fmt.Errorf("%s swapped and returned %s, want the value written and a version above %d",
				casCall(key, rec.Version, next), showRecord(got), rec.Version)
		case !swapped && got.Version <= rec.Version:
			return done, fmt.Errorf("%s conflict returned %s, want the current record, whose version is above %d (versions only grow)",
				casCall(key, rec.Version, next), showRecord(got), rec.Version)
		case swapped:
			done = append(done, got)
			conflicts = 0
		default:
			conflicts++
		}
		rec = got
	}
	return done, nil
}

// backOff pauses a goroutine that lost the race for a key conflicts times
// in a row, for a random time up to took, the length of its last call,
// doubled for each further conflict and never more than backOffMax.
// Without it, every swap voids the calls of all the goroutines already in
// flight or queued for a connection: against a local PostgreSQL, 6400
// increments by 32 goroutines took some 85,000 calls with a fixed backoff
// of at most 10 ms and about 10,000 with this one (118,000 without any
// against Redis).
func backOff(ctx context.Context, conflicts int, took time.Duration) {
	limit := min(took<<min(conflicts-1, 10), backOffMax)
	if limit <= 0 {
		return
	}
	t := time.NewTimer(rand.N(limit))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// parseCounter decodes a counter written by incrementLoop; an empty value
// (absent key) is 0.
func parseCounter(v []byte) (uint64, error) {
	if len(v) == 0 {
		return 0, nil
	}
	n, err := strconv.ParseUint(string(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stored value %s is not a counter this suite wrote", showValue(v))
	}
	return n, nil
}

// write calls CompareAndSwap where it must swap, and checks the returned
// record: the value written and a version above expected.
func write(ctx context.Context, s storage.Store, key string, expected uint64, value []byte, ttl time.Duration) (storage.Record, error) {
	rec, swapped, err := s.CompareAndSwap(ctx, key, expected, value, ttl)
	switch {
	case err != nil:
		return rec, fmt.Errorf("%s: unexpected error: %w", casCall(key, expected, value), err)
	case !swapped:
		return rec, fmt.Errorf("%s = %s, swapped false; want a swap", casCall(key, expected, value), showRecord(rec))
	case rec.Version <= expected:
		return rec, fmt.Errorf("%s swapped with Version %d, want a version above %d", casCall(key, expected, value), rec.Version, expected)
	case !bytes.Equal(rec.Value, value):
		return rec, fmt.Errorf("%s swapped and returned Value %s, want the value written", casCall(key, expected, value), showValue(rec.Value))
	}
	return rec, nil
}

// conflict calls CompareAndSwap where it must not swap, and checks that
// it returns current, the record stored, with a nil error and leaves it.
func conflict(ctx context.Context, s storage.Store, key string, expected uint64, value []byte, current storage.Record) error {
	rec, swapped, err := s.CompareAndSwap(ctx, key, expected, value, longTTL)
	switch {
	case err != nil:
		return fmt.Errorf("%s: %w, want a conflict: swapped false and a nil error", casCall(key, expected, value), err)
	case swapped:
		return fmt.Errorf("%s swapped to %s, want a conflict: the stored version is %d", casCall(key, expected, value), showRecord(rec), current.Version)
	case !sameRecord(rec, current):
		return fmt.Errorf("%s conflict returned %s, want the current record %s", casCall(key, expected, value), showRecord(rec), showRecord(current))
	}
	if err := wantRecord(ctx, s, key, current); err != nil {
		return fmt.Errorf("after a conflict: %w", err)
	}
	return nil
}

// wantRecord checks that Get(key) returns want.
func wantRecord(ctx context.Context, s storage.Store, key string, want storage.Record) error {
	got, err := s.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("Get(%s): unexpected error: %w", showKey(key), err)
	}
	if !sameRecord(got, want) {
		return fmt.Errorf("Get(%s) = %s, want %s%s", showKey(key), showRecord(got), showRecord(want), valueDiff(got.Value, want.Value))
	}
	return nil
}

// wantAbsent checks that Get(key) reads key as absent.
func wantAbsent(ctx context.Context, s storage.Store, key string) error {
	got, err := s.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("Get(%s): unexpected error: %w (an absent key is Version 0 and a nil error)", showKey(key), err)
	}
	if got.Version != 0 || len(got.Value) != 0 {
		return fmt.Errorf("Get(%s) = %s, want absent: Version 0 and an empty Value", showKey(key), showRecord(got))
	}
	return nil
}

// waitAbsent polls Get(key), just written with ttl, until it reads absent,
// and fails once expiryBound past the ttl, or a little before ctx ends.
func waitAbsent(ctx context.Context, s storage.Store, key string, ttl time.Duration) error {
	start := time.Now()
	deadline := start.Add(ttl + expiryBound)
	if d, ok := ctx.Deadline(); ok && d.Add(-deadlineMargin).Before(deadline) {
		deadline = d.Add(-deadlineMargin)
	}
	var last storage.Record
	var lastAt time.Duration
	present := func(got storage.Record, at time.Duration) error {
		return fmt.Errorf("Get(%s) = %s %v after it was written with ttl %v, want absent",
			showKey(key), showRecord(got), at.Round(time.Millisecond), ttl)
	}
	for {
		got, err := s.Get(ctx, key)
		if err != nil {
			if last.Version != 0 && lastAt >= ttl && ctx.Err() != nil && !time.Now().Before(deadline) {
				// ctx ended during the read that was to be the last (the
				// goroutine stalled past the margin): the read before it,
				// already past the ttl, is the finding. The cut read is
				// named, not wrapped: the check did not run out of time.
				return fmt.Errorf("%w; the next Get did not return before the wait ended (%v)", present(last, lastAt), err)
			}
			return fmt.Errorf("Get(%s) while waiting for expiry: unexpected error: %w", showKey(key), err)
		}
		if got.Version == 0 {
			return nil
		}
		last, lastAt = got, time.Since(start)
		if time.Now().After(deadline) {
			return present(got, lastAt)
		}
		if err := sleep(ctx, pollEvery); err != nil {
			return fmt.Errorf("waiting for %s to expire: %w", showKey(key), err)
		}
	}
}

// sleep waits d, or until ctx ends, and then returns ctx.Err().
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	return ctx.Err()
}

// sameRecord reports whether a and b have the same version and value; nil
// and empty values are the same.
func sameRecord(a, b storage.Record) bool {
	return a.Version == b.Version && bytes.Equal(a.Value, b.Value)
}

// casCall describes a CompareAndSwap call for messages.
func casCall(key string, expected uint64, value []byte) string {
	return fmt.Sprintf("CompareAndSwap(%s, expected %d, %s)", showKey(key), expected, showValue(value))
}

// showKey quotes key, shortening a long one.
func showKey(key string) string {
	if len(key) <= 40 {
		return strconv.Quote(key)
	}
	return fmt.Sprintf("%q...(%d bytes)", key[:24], len(key))
}

// showValue quotes value, shortening a long one.
func showValue(v []byte) string {
	switch {
	case v == nil:
		return "nil"
	case len(v) <= 40:
		return strconv.Quote(string(v))
	}
	return fmt.Sprintf("%d bytes %q...", len(v), v[:16])
}

// showRecord formats a record for messages.
func showRecord(r storage.Record) string {
	return fmt.Sprintf("{Version %d, Value %s}", r.Version, showValue(r.Value))
}

// valueDiff says where two long values part, for messages; it is empty
// when they are equal or short enough to read whole.
func valueDiff(got, want []byte) string {
	if bytes.Equal(got, want) || (len(got) <= 40 && len(want) <= 40) {
		return ""
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	return fmt.Sprintf(" (got %d bytes, want %d; first difference at byte %d)", len(got), len(want), i)
}
