package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/sluice-go/sluice/storage"
)

// A record expires at its expiry instant, not one nanosecond later.
func TestRecordExpiresAtItsExpiry(t *testing.T) {
	r := record{expiry: 1000}
	if !r.live(999) || r.live(1000) || r.live(1001) {
		t.Errorf("live(999, 1000, 1001) = %t, %t, %t; want true, false, false", r.live(999), r.live(1000), r.live(1001))
	}
}

// The longest ttl saturates instead of overflowing into the past.
func TestLongestTTLIsKept(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, filepath.Join(t.TempDir(), "ttl.db"), WithNoSync())
	rec, swapped, err := s.CompareAndSwap(ctx, "forever", 0, []byte("v"), time.Duration(math.MaxInt64))
	if err != nil || !swapped {
		t.Fatalf("CompareAndSwap with ttl MaxInt64 = %t, %v", swapped, err)
	}
	if got, err := s.Get(ctx, "forever"); err != nil || got.Version != rec.Version {
		t.Errorf("Get after a write with ttl MaxInt64 = %+v, %v; want %+v (the expiry overflowed into the past?)", got, err, rec)
	}
}

// Get returns its own copy of the value, not a slice of bbolt's read-only
// memory map, which would fault when written and change or vanish when the
// file is remapped or closed.
func TestGetReturnsACopy(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, filepath.Join(t.TempDir(), "copy.db"), WithNoSync())
	// Enough records that the bucket has pages of its own in the map (a
	// small bucket is stored inline, and bbolt may copy it when reading).
	for i := range 200 {
		if _, _, err := s.CompareAndSwap(ctx, fmt.Sprintf("fill%03d", i), 0, make([]byte, 64), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.CompareAndSwap(ctx, "k", 0, []byte("value"), time.Hour); err != nil {
		t.Fatal(err)
	}
	rec, err := s.Get(ctx, "k")
	if err != nil || string(rec.Value) != "value" {
		t.Fatalf("Get = %+v, %v", rec, err)
	}
	func() {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("writing to the Value Get returned faulted (it aliases bbolt's memory map): %v", r)
			}
		}()
		rec.Value[0] = 'X'
	}()
	if again, err := s.Get(ctx, "k"); err != nil || string(again.Value) != "value" {
		t.Errorf("Get after the caller changed the Value of an earlier Get = %q, %v; want %q", again.Value, err, "value")
	}
}

// A record renewed between the janitor's read and its delete is kept.
func TestSweepSparesRenewedRecords(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, filepath.Join(t.TempDir(), "renew.db"), WithNoSync())
	past := time.Now().Add(-time.Minute).UnixNano()
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(s.bucket)
		if err := b.Put([]byte("renewed"), encodeRecord(1, past, []byte("old"))); err != nil {
			return err
		}
		return b.Put([]byte("stale"), encodeRecord(2, past, []byte("old")))
	})
	if err != nil {
		t.Fatal(err)
	}
	doomed, _, err := s.findExpired(nil, time.Now().UnixNano())
	if err != nil || len(doomed) != 2 {
		t.Fatalf("findExpired = %q, %v; want both records", doomed, err)
	}
	rec, swapped, err := s.CompareAndSwap(ctx, "renewed", 0, []byte("new"), time.Hour)
	if err != nil || !swapped {
		t.Fatalf("CompareAndSwap on the expired record = %t, %v", swapped, err)
	}
	if n, err := s.deleteExpired(doomed, time.Now().UnixNano()); err != nil || n != 1 {
		t.Errorf("deleteExpired = %d, %v; want 1 (only the record still expired)", n, err)
	}
	if got, err := s.Get(ctx, "renewed"); err != nil || got.Version != rec.Version || string(got.Value) != "new" {
		t.Errorf("Get of the record renewed before the delete = %+v, %v; want %+v", got, err, rec)
	}
}

// Calls on a store whose caller closed the database under it fail with
// storage.ErrUnavailable and bbolt's cause; none reports a conflict.
func TestDatabaseClosedUnderTheStore(t *testing.T) {
	ctx := context.Background()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "theirs.db"), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, getErr := s.Get(ctx, "k")
	_, _, casErr := s.CompareAndSwap(ctx, "k", 0, []byte("v"), time.Hour)
	delErr := s.Delete(ctx, "k")
	for op, err := range map[string]error{"get": getErr, "cas": casErr, "delete": delErr} {
		if !errors.Is(err, storage.ErrUnavailable) || !errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
			t.Errorf("%s on a closed database = %v, want an error wrapping storage.ErrUnavailable and bbolt's ErrDatabaseNotOpen", op, err)
		}
	}
}

// More writes than one transaction takes (maxBatch) queue behind a running
// one: every caller gets its outcome, none is dropped or left waiting.
func TestQueueLongerThanOneBatch(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "batch.db"), WithNoSync())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tx, err := s.db.Begin(true) // holds the writer lock: the writes queue
	if err != nil {
		t.Fatal(err)
	}
	// Released before the store's Close (cleanups run last first), also
	// when the test fails before its own Rollback: Close would wait for
	// the blocked writer for ever.
	t.Cleanup(func() { _ = tx.Rollback() })
	type result struct {
		key     string
		rec     storage.Record
		swapped bool
		err     error
	}
	const n = maxBatch + 2
	results := make(chan result, n+1)
	cas := func(key string) {
		rec, swapped, err := s.CompareAndSwap(ctx, key, 0, []byte(key), time.Hour)
		results <- result{key, rec, swapped, err}
	}
	go cas("lone")
	waitFor(t, "the first write to start its transaction", func() bool {
		s.queueMu.Lock()
		defer s.queueMu.Unlock()
		return s.busy
	})
	for i := range n {
		go cas(fmt.Sprintf("q%04d", i))
	}
	waitFor(t, "the writes to queue", func() bool {
		s.queueMu.Lock()
		defer s.queueMu.Unlock()
		return len(s.queue) == n
	})
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
	for range n + 1 {
		select {
		case r := <-results:
			if r.err != nil || !r.swapped || string(r.rec.Value) != r.key {
				t.Errorf("CompareAndSwap(%q) = %+v, %t, %v", r.key, r.rec, r.swapped, r.err)
			}
		case <-timeout:
			cancel() // release the callers left waiting, so that Close can return
			t.Fatal("some queued writes never got their outcome")
		}
	}
}

// stopAfterClaim is a context that ends while its write is applied. Once
// armed (when its write is queued, and only the transaction that claims
// the write will ask it), its first Err call still returns nil, but closes
// Done and gives the waiting caller time to see it before the commit ends.
type stopAfterClaim struct {
	context.Context
	done  chan struct{}
	armed atomic.Bool
	ended atomic.Bool
}

func (c *stopAfterClaim) Done() <-chan struct{} { return c.done }

func (c *stopAfterClaim) Err() error {
	if c.ended.Load() {
		return context.Canceled
	}
	if c.armed.CompareAndSwap(true, false) {
		close(c.done)
		time.Sleep(50 * time.Millisecond)
		c.ended.Store(true)
	}
	return nil
}

// A queued write whose ctx ends after the transaction claimed it waits for
// the commit and reports the true outcome: it was written.
func TestCtxEndingAfterClaimReportsTheWrite(t *testing.T) {
	bg := context.Background()
	s := mustOpen(t, filepath.Join(t.TempDir(), "claim.db"), WithNoSync())
	tx, err := s.db.Begin(true) // holds the writer lock: the writes queue
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() }) // see TestQueueLongerThanOneBatch
	first := make(chan error, 1)
	go func() { _, _, err := s.CompareAndSwap(bg, "first", 0, []byte("v"), time.Hour); first <- err }()
	waitFor(t, "the first write to start its transaction", func() bool {
		s.queueMu.Lock()
		defer s.queueMu.Unlock()
		return s.busy
	})
	type result struct {
		rec     storage.Record
		swapped bool
		err     error
	}
	second := make(chan result, 1)
	ctx := &stopAfterClaim{Context: bg, done: make(chan struct{})}
	go func() {
		rec, swapped, err := s.CompareAndSwap(ctx, "second", 0, []byte("v"), time.Hour)
		second <- result{rec, swapped, err}
	}()
	waitFor(t, "the second write to queue", func() bool {
		s.queueMu.Lock()
		defer s.queueMu.Unlock()
		return len(s.queue) == 1
	})
	ctx.armed.Store(true)
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
	select {
	case err := <-first:
		if err != nil {
			t.Fatal(err)
		}
	case <-timeout:
		t.Fatal("the first write never got its outcome")
	}
	var got result
	select {
	case got = <-second:
	case <-timeout:
		t.Fatal("the second write never got its outcome")
	}
	stored, err := s.Get(bg, "second")
	if err != nil {
		t.Fatal(err)
	}
	if got.err != nil || !got.swapped || got.rec.Version != stored.Version || stored.Version == 0 {
		t.Errorf("CompareAndSwap whose ctx ended after its op was claimed = %+v, %t, %v; stored %+v; want the write reported as it landed", got.rec, got.swapped, got.err, stored)
	}
}

// Keys may hold any bytes, a leading NUL included: the key where earlier
// releases kept the layout marker ("\x00sluice") is a key like any other,
// and the file still opens once it has been used.
func TestMarkerKeyIsAUsableKey(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "marker.db")
	s := mustOpen(t, path, WithNoSync())
	const key = "\x00sluice"
	if rec, err := s.Get(ctx, key); err != nil || rec.Version != 0 {
		t.Fatalf("Get(%q) of a key never written = %+v, %v; want absent", key, rec, err)
	}
	rec, swapped, err := s.CompareAndSwap(ctx, key, 0, []byte("v"), time.Hour)
	if err != nil || !swapped {
		t.Fatalf("CompareAndSwap(%q, 0) = %+v, %t, %v; want a swap", key, rec, swapped, err)
	}
	if got, err := s.Get(ctx, key); err != nil || got.Version != rec.Version || string(got.Value) != "v" {
		t.Fatalf("Get(%q) = %+v, %v; want %+v", key, got, err, rec)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, path)
	if got, err := s.Get(ctx, key); err != nil || got.Version != rec.Version {
		t.Fatalf("after reopening, Get(%q) = %+v, %v; want %+v", key, got, err, rec)
	}
	if err := s.Delete(ctx, key); err != nil {
		t.Fatalf("Delete(%q) = %v", key, err)
	}
}

// A file of an earlier release, with the marker under "\x00sluice", opens
// with its records, and the marker moves out of the keys callers use.
func TestLegacyMarkerMoves(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "legacy.db")
	writeFile(t, path, func(_ *bbolt.Tx, b *bbolt.Bucket) error {
		if err := b.Put([]byte("\x00sluice"), markerValue); err != nil {
			return err
		}
		return b.Put([]byte("k"), encodeRecord(7, time.Now().Add(time.Hour).UnixNano(), []byte("old")))
	})
	s := mustOpen(t, path)
	if rec, err := s.Get(ctx, "k"); err != nil || rec.Version != 7 || string(rec.Value) != "old" {
		t.Fatalf("Get(k) in a file of an earlier release = %+v, %v; want version 7, \"old\"", rec, err)
	}
	if rec, err := s.Get(ctx, "\x00sluice"); err != nil || rec.Version != 0 {
		t.Fatalf("Get of the old marker key = %+v, %v; want absent", rec, err)
	}
	if _, ok, err := s.CompareAndSwap(ctx, "\x00sluice", 0, []byte("v"), time.Hour); err != nil || !ok {
		t.Fatalf("CompareAndSwap on the old marker key = %t, %v; want a swap", ok, err)
	}
}

// writeFile makes or opens a bbolt file at path and fills its default
// bucket (made if absent) with fill, as an earlier release or another
// program would have left it.
func writeFile(t *testing.T, path string, fill func(tx *bbolt.Tx, b *bbolt.Bucket) error) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(defaultBucket))
		if err != nil {
			return err
		}
		return fill(tx, b)
	})
	if err := errors.Join(err, db.Close()); err != nil {
		t.Fatal(err)
	}
}

// A file of the release before the layouts bucket, with the marker in the
// records' bucket under a key longer than any caller's, opens with its
// records, and the marker moves to the layouts bucket.
func TestInBucketMarkerMoves(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "layout1.db")
	writeFile(t, path, func(_ *bbolt.Tx, b *bbolt.Bucket) error {
		if err := b.Put(markerKey, markerValue); err != nil {
			return err
		}
		return b.Put([]byte("k"), encodeRecord(7, time.Now().Add(time.Hour).UnixNano(), []byte("old")))
	})
	s := mustOpen(t, path)
	if rec, err := s.Get(ctx, "k"); err != nil || rec.Version != 7 || string(rec.Value) != "old" {
		t.Fatalf("Get(k) in a file of an earlier release = %+v, %v; want version 7, \"old\"", rec, err)
	}
	err := s.db.View(func(tx *bbolt.Tx) error {
		if v := tx.Bucket(s.bucket).Get(markerKey); v != nil {
			return fmt.Errorf("the records' bucket still holds the marker %q", v)
		}
		if v := tx.Bucket(layoutsBucket).Get(s.bucket); !bytes.Equal(v, markerValue) {
			return fmt.Errorf("layouts bucket holds %q under %q, want %q", v, s.bucket, markerValue)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, path) // and opens again from the layouts bucket
	if rec, err := s.Get(ctx, "k"); err != nil || rec.Version != 7 {
		t.Fatalf("Get(k) after the second open = %+v, %v; want version 7", rec, err)
	}
}

// An earlier release that opens a migrated file whose bucket is empty
// writes its marker there again; the next Open takes it out, so that the
// key is a caller's again and a small bucket stays inline.
func TestMarkerWrittenAgainByAnEarlierRelease(t *testing.T) {
	ctx := context.Background()
	for name, marked := range map[string][][]byte{
		"first release":    {legacyMarkerKey},
		"previous release": {markerKey},
		"both":             {legacyMarkerKey, markerKey},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "again.db")
			if err := mustOpen(t, path).Close(); err != nil {
				t.Fatal(err)
			}
			// What such a release's Open does to an empty bucket.
			writeFile(t, path, func(_ *bbolt.Tx, b *bbolt.Bucket) error {
				for _, key := range marked {
					if err := b.Put(key, markerValue); err != nil {
						return err
					}
				}
				return nil
			})
			s := mustOpen(t, path)
			if _, ok, err := s.CompareAndSwap(ctx, string(legacyMarkerKey), 0, []byte("v"), time.Hour); err != nil || !ok {
				t.Fatalf("CompareAndSwap(%q, 0) = %t, %v; want a swap", legacyMarkerKey, ok, err)
			}
			err := s.db.View(func(tx *bbolt.Tx) error {
				b := tx.Bucket(s.bucket)
				if v := b.Get(markerKey); v != nil {
					return errors.New("the records' bucket still holds the previous release's marker")
				}
				if b.Root() != 0 {
					return errors.New("the records' bucket of one record is not inline")
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A marker naming a layout this release does not know, where an earlier
// release kept it or in the layouts bucket, or anything but a marker in
// the layouts bucket, fails Open with ErrCorrupt and changes nothing in
// the file.
func TestUnknownLayout(t *testing.T) {
	other := []byte("sluice bolt layout 99")
	// layout notes the default bucket under value in the layouts bucket.
	layout := func(tx *bbolt.Tx, value []byte) error {
		l, err := tx.CreateBucket(layoutsBucket)
		if err != nil {
			return err
		}
		return l.Put([]byte(defaultBucket), value)
	}
	for name, tc := range map[string]struct {
		write func(tx *bbolt.Tx, b *bbolt.Bucket) error
		empty bool // no record in the bucket, so that nothing else is wrong
	}{
		"in the records' bucket": {write: func(_ *bbolt.Tx, b *bbolt.Bucket) error { return b.Put(markerKey, other) }},
		"in the layouts bucket":  {write: func(tx *bbolt.Tx, _ *bbolt.Bucket) error { return layout(tx, other) }},
		"in the records' bucket, beside a known one in the layouts bucket": {write: func(tx *bbolt.Tx, b *bbolt.Bucket) error {
			if err := layout(tx, markerValue); err != nil {
				return err
			}
			return b.Put(markerKey, other)
		}},
		"a nested bucket where the previous release kept its marker": {empty: true, write: func(tx *bbolt.Tx, b *bbolt.Bucket) error {
			if err := layout(tx, markerValue); err != nil {
				return err
			}
			_, err := b.CreateBucket(markerKey)
			return err
		}},
		"a nested bucket in the layouts bucket": {empty: true, write: func(tx *bbolt.Tx, _ *bbolt.Bucket) error {
			l, err := tx.CreateBucket(layoutsBucket)
			if err != nil {
				return err
			}
			_, err = l.CreateBucket([]byte(defaultBucket))
			return err
		}},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "future.db")
			writeFile(t, path, func(tx *bbolt.Tx, b *bbolt.Bucket) error {
				if err := tc.write(tx, b); err != nil || tc.empty {
					return err
				}
				return b.Put([]byte("k"), []byte("a record of that layout"))
			})
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			s, err := Open(path)
			if err == nil {
				_ = s.Close()
				t.Fatal("Open of a bucket of an unknown layout succeeded")
			}
			if !errors.Is(err, storage.ErrCorrupt) || !strings.Contains(err.Error(), defaultBucket) {
				t.Errorf("Open = %v; want an error naming the bucket, wrapping storage.ErrCorrupt", err)
			}
			if after, err := os.ReadFile(path); err != nil || !bytes.Equal(before, after) {
				t.Errorf("the file changed after the failed Open (%v)", err)
			}
		})
	}
}

// The records' bucket holds nothing but records: with a few of them bbolt
// keeps it inline in its parent's page, so a write commits one page less
// than it would to a bucket of its own pages.
func TestSmallBucketStaysInline(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, filepath.Join(t.TempDir(), "inline.db"), WithNoSync())
	for i := range 3 {
		if _, _, err := s.CompareAndSwap(ctx, fmt.Sprintf("user:%d", i), 0, []byte("state"), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	err := s.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(s.bucket)
		if n := b.Stats().KeyN; n != 3 {
			return fmt.Errorf("the records' bucket holds %d keys, want the 3 records", n)
		}
		if root := b.Root(); root != 0 {
			return fmt.Errorf("the records' bucket has its own root page %d; want it inline", root)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// bbolt panics, rather than failing, on some damaged files (here a
// freelist of garbage): Open returns an error wrapping storage.ErrCorrupt
// instead of crashing the program.
func TestOpenDamagedPages(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "damaged.db")
	s := mustOpen(t, path, WithNoSync())
	for i := range 200 {
		if _, _, err := s.CompareAndSwap(ctx, fmt.Sprint("key-", i), 0, make([]byte, 100), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	good := slices.Clone(data)
	for i := 2 * os.Getpagesize(); i < len(data); i++ { // every page but the two meta pages
		data[i] ^= 0x5a
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("Open of a damaged file panicked: %v", r)
			}
		}()
		s, err := Open(path, WithOpenTimeout(time.Second))
		if err == nil {
			s.Close()
		}
		if !errors.Is(err, storage.ErrCorrupt) {
			t.Fatalf("Open of a damaged file = %v; want an error wrapping storage.ErrCorrupt", err)
		}
	}()
	// The failed Open released the file: repaired, it opens again at once.
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, WithOpenTimeout(300*time.Millisecond))
	if err != nil {
		t.Fatalf("Open of the repaired file after a failed Open: %v; want it open (the failed Open must release its lock)", err)
	}
	if rec, err := s.Get(ctx, "key-1"); err != nil || rec.Version == 0 {
		t.Errorf("Get(key-1) in the repaired file = %+v, %v", rec, err)
	}
	s.Close()
}
