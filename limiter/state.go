package limiter

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
)

// The record format, kept in storage.Record.Value for one key:
//
//	byte 0      format version, formatV1
//	bytes 1-4   fingerprint of the buckets (FNV-1a 32, big endian)
//	varint      time of the state, Unix nanoseconds (zig-zag)
//	per bucket  uvarint whole tokens, uvarint refill remainder
//
// Buckets appear in the limiter's canonical order, which the fingerprint
// pins. A new format takes a new version byte; decoders reject versions
// they do not know rather than guess.
const formatV1 = 1

// errOtherBuckets reports a well-formed record written by a limiter with
// other buckets under the same name. The limiter starts such a key afresh.
var errOtherBuckets = errors.New("record was written for other buckets")

// fingerprint identifies a canonical bucket list in stored records.
func fingerprint(rules []Bucket) uint32 {
	h := fnv.New32a()
	for _, b := range rules {
		h.Write(strconv.AppendInt(nil, b.Capacity, 10))
		h.Write([]byte{'/'})
		h.Write(strconv.AppendInt(nil, int64(b.Period), 10))
		h.Write([]byte{';'})
	}
	return h.Sum32()
}

// encodeState appends the record of s to dst.
func encodeState(dst []byte, fp uint32, rules []Bucket, s *state) []byte {
	dst = append(dst, formatV1)
	dst = binary.BigEndian.AppendUint32(dst, fp)
	dst = binary.AppendVarint(dst, s.at)
	for i := range rules {
		dst = binary.AppendUvarint(dst, uint64(s.levels[i].whole))
		dst = binary.AppendUvarint(dst, uint64(s.levels[i].frac))
	}
	return dst
}

// decodeState reads a record written by encodeState. It checks every field
// against the buckets, so a decoded state always satisfies the algorithm's
// invariants. A well-formed record for other buckets returns
// errOtherBuckets; anything else that does not decode returns an error
// describing what is wrong.
func decodeState(b []byte, fp uint32, rules []Bucket) (state, error) {
	var s state
	if len(b) == 0 {
		return s, errors.New("empty record")
	}
	if b[0] != formatV1 {
		return s, fmt.Errorf("unknown record format %d", b[0])
	}
	if len(b) < 5 {
		return s, errors.New("truncated record header")
	}
	other := binary.BigEndian.Uint32(b[1:5]) != fp
	b = b[5:]
	at, n := binary.Varint(b)
	if n <= 0 {
		return s, errors.New("bad time field")
	}
	s.at, b = at, b[n:]
	if other {
		// Check the shape only: pairs of uvarints to the end.
		for pairs := 0; len(b) > 0; pairs++ {
			if pairs == MaxBuckets {
				return s, errors.New("too many buckets")
			}
			for range 2 {
				if _, n := binary.Uvarint(b); n <= 0 {
					return s, errors.New("bad bucket field")
				} else {
					b = b[n:]
				}
			}
		}
		return s, errOtherBuckets
	}
	for i, r := range rules {
		whole, n := binary.Uvarint(b)
		if n <= 0 {
			return s, fmt.Errorf("bucket %d: bad token count", i)
		}
		b = b[n:]
		frac, n := binary.Uvarint(b)
		if n <= 0 {
			return s, fmt.Errorf("bucket %d: bad refill remainder", i)
		}
		b = b[n:]
		if whole > uint64(r.Capacity) || frac >= uint64(r.Period) || whole == uint64(r.Capacity) && frac != 0 {
			return s, fmt.Errorf("bucket %d: level %d+%d out of range for %v", i, whole, frac, r)
		}
		s.levels[i] = level{whole: int64(whole), frac: int64(frac)}
	}
	if len(b) != 0 {
		return s, fmt.Errorf("%d trailing bytes", len(b))
	}
	return s, nil
}
