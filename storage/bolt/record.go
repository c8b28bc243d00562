package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/sluice-go/sluice/storage"
)

// On-disk layout of one record, stored under its key in the store's bucket:
//
//	offset  size  field
//	0       1     format byte (formatV1)
//	1       8     version, big-endian uint64, from the bucket's sequence
//	9       8     expiry, big-endian int64 Unix nanoseconds
//	17      n     value, byte for byte
//
// A value that does not start with a known format byte or is shorter than
// the header was not written by this driver: it is reported with
// storage.ErrCorrupt and never overwritten.
const (
	formatV1   byte = 0xB1
	headerLen       = 1 + 8 + 8
	versionOff      = 1
	expiryOff       = 9
)

// layoutsBucket is a top-level bucket beside the records' buckets: under
// the name of each bucket this package created it holds markerValue, so
// that a bucket filled by someone else is recognised at open time. Kept
// outside the records' bucket, the marker takes no key a caller may use,
// and a bucket of a few records stays small enough for bbolt to inline it
// into its parent's page, so that each write to it commits one page fewer.
var layoutsBucket = []byte("\x00sluice layouts")

// markerKey is where releases before the layouts bucket kept the marker:
// in the records' bucket, under a key longer than storage.MaxKeyLen. start
// moves it to the layouts bucket.
var markerKey = append([]byte("\x00sluice marker\x00"), make([]byte, storage.MaxKeyLen)...)

// legacyMarkerKey is where the earliest releases kept the marker, in the
// records' bucket; start moves it to the layouts bucket, freeing the key
// for callers.
var legacyMarkerKey = []byte("\x00sluice")

// markerValue names the layout of the records in a bucket.
var markerValue = []byte("sluice bolt layout 1")

var (
	errShort   = errors.New("record shorter than its header")
	errFormat  = errors.New("unknown record format byte")
	errBucket  = errors.New("nested bucket where a record was expected")
	errVersion = errors.New("record of version 0, which the bucket's sequence never gives")
)

// record is a decoded view of a stored value. Value aliases the bytes it
// was decoded from: copy it before the transaction ends.
type record struct {
	version uint64
	expiry  int64
	value   []byte
}

// decodeRecord checks the layout of b and returns the record it holds.
func decodeRecord(b []byte) (record, error) {
	if len(b) < headerLen {
		if len(b) > 0 && b[0] != formatV1 {
			return record{}, fmt.Errorf("%w 0x%02x", errFormat, b[0])
		}
		return record{}, fmt.Errorf("%w (%d bytes)", errShort, len(b))
	}
	if b[0] != formatV1 {
		return record{}, fmt.Errorf("%w 0x%02x", errFormat, b[0])
	}
	version := binary.BigEndian.Uint64(b[versionOff:])
	if version == 0 {
		return record{}, errVersion
	}
	return record{
		version: version,
		expiry:  int64(binary.BigEndian.Uint64(b[expiryOff:])),
		value:   b[headerLen:],
	}, nil
}

// encodeRecord returns a new slice holding the record in the on-disk
// layout. The slice is owned by the caller, as bbolt's Put requires.
func encodeRecord(version uint64, expiry int64, value []byte) []byte {
	b := make([]byte, headerLen+len(value))
	b[0] = formatV1
	binary.BigEndian.PutUint64(b[versionOff:], version)
	binary.BigEndian.PutUint64(b[expiryOff:], uint64(expiry))
	copy(b[headerLen:], value)
	return b
}

// live reports whether r has not expired at now (Unix nanoseconds).
func (r record) live(now int64) bool { return r.expiry > now }

// export copies r out of the transaction into a storage.Record. An empty
// value stays non-nil, so that it is distinguishable from an absent one.
func (r record) export() storage.Record {
	v := make([]byte, len(r.value))
	copy(v, r.value)
	return storage.Record{Value: v, Version: r.version}
}

// expiryAt returns now+ttl in Unix nanoseconds, saturating instead of
// overflowing for a very long ttl.
func expiryAt(now time.Time, ttl time.Duration) int64 {
	n := now.UnixNano()
	if ttl > 0 && n > math.MaxInt64-int64(ttl) {
		return math.MaxInt64
	}
	return n + int64(ttl)
}
