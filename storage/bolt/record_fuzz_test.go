package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/sluice-go/sluice/storage"
)

// FuzzDecodeRecord feeds arbitrary bytes to decodeRecord: it never panics,
// accepts exactly the values in the on-disk layout (whose version, from
// the bucket's sequence, is never 0), and what it accepts encodes back to
// the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeRecord(1, math.MaxInt64, []byte("state")))
	f.Add(encodeRecord(math.MaxUint64, 0, nil))
	f.Add(encodeRecord(7, -1, []byte{}))
	f.Add(encodeRecord(1<<56, 1, []byte{0}))
	f.Add([]byte{formatV1})
	f.Add([]byte{})
	f.Add([]byte{0xB2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Add(markerValue)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		inLayout := len(b) >= headerLen && b[0] == formatV1 && binary.BigEndian.Uint64(b[versionOff:]) != 0
		if err != nil {
			if inLayout {
				t.Fatalf("decodeRecord(%x) refused a value in the layout: %v", b, err)
			}
			if (len(b) < headerLen || b[0] != formatV1) && !errors.Is(err, errShort) && !errors.Is(err, errFormat) {
				t.Fatalf("decodeRecord(%x): unexpected error %v", b, err)
			}
			return
		}
		if !inLayout {
			t.Fatalf("decodeRecord(%x) accepted a value not in the layout: %+v", b, r)
		}
		if r.version != binary.BigEndian.Uint64(b[versionOff:]) || r.expiry != int64(binary.BigEndian.Uint64(b[expiryOff:])) || !bytes.Equal(r.value, b[headerLen:]) {
			t.Fatalf("decodeRecord(%x) = %+v: fields misread", b, r)
		}
		if enc := encodeRecord(r.version, r.expiry, r.value); !bytes.Equal(enc, b) {
			t.Fatalf("decodeRecord(%x) = %+v, which encodes as %x", b, r, enc)
		}
	})
}

// FuzzStoredValue puts arbitrary bytes under a key, as another program or
// a damaged file could, and reads them through the Store: Get reports
// ErrCorrupt, absent (Version 0, nil Value) or a live record with a
// version the driver could have written; a CompareAndSwap never
// overwrites a value Get called corrupt.
func FuzzStoredValue(f *testing.F) {
	far := time.Now().Add(time.Hour).UnixNano()
	f.Add(encodeRecord(1, far, []byte("state")))
	f.Add(encodeRecord(3, 1, []byte("expired")))
	f.Add([]byte{formatV1, 1, 2})
	f.Add([]byte("plain text"))
	f.Add([]byte{})
	db, err := bbolt.Open(filepath.Join(f.TempDir(), "fuzz.db"), 0o600, &bbolt.Options{NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	s, err := New(db)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		s.Close()
		db.Close()
	})
	ctx := context.Background()
	n := 0
	f.Fuzz(func(t *testing.T, raw []byte) {
		n++
		key := "k" + strconv.Itoa(n)
		if err := db.Update(func(tx *bbolt.Tx) error {
			return tx.Bucket(s.bucket).Put([]byte(key), raw)
		}); err != nil {
			t.Fatal(err)
		}
		rec, err := s.Get(ctx, key)
		switch {
		case err != nil:
			if !errors.Is(err, storage.ErrCorrupt) {
				t.Fatalf("Get of %x: error %v does not wrap ErrCorrupt", raw, err)
			}
			_, swapped, cerr := s.CompareAndSwap(ctx, key, 0, []byte("new"), time.Minute)
			if swapped || !errors.Is(cerr, storage.ErrCorrupt) {
				t.Fatalf("CompareAndSwap over corrupt %x: swapped %v, %v; want ErrCorrupt", raw, swapped, cerr)
			}
			if err := s.Delete(ctx, key); !errors.Is(err, storage.ErrCorrupt) {
				t.Fatalf("Delete of corrupt %x: %v; want ErrCorrupt", raw, err)
			}
			var after []byte
			_ = db.View(func(tx *bbolt.Tx) error {
				after = bytes.Clone(tx.Bucket(s.bucket).Get([]byte(key)))
				return nil
			})
			if !bytes.Equal(after, raw) {
				t.Fatalf("corrupt %x was overwritten with %x", raw, after)
			}
		case rec.Version == 0:
			if rec.Value != nil {
				t.Fatalf("Get of %x = Version 0 with Value %q: absent must have a nil Value", raw, rec.Value)
			}
		default:
			if len(raw) < headerLen || raw[0] != formatV1 || !bytes.Equal(rec.Value, raw[headerLen:]) || rec.Version != binary.BigEndian.Uint64(raw[versionOff:]) {
				t.Fatalf("Get of %x = %+v, not the record in the layout", raw, rec)
			}
		}
	})
}
