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
//	byte 0      format version, formatV2
//	bytes 1-4   fingerprint of the buckets (FNV-1a 32, big endian)
//	bytes 5-12  time of the state, Unix nanoseconds (int64, big endian)
//	per bucket  whole tokens, refill remainder (uint64 each, big endian)
//
// Fixed-width fields cost a few bytes more than varints and make encoding
// and decoding a handful of loads and stores, which matters on the
// in-process path. In formatV1 the time is a zig-zag varint and each level
// two uvarints. Both are read. formatV2 is written only to in-process
// stores, whose records no other program reads; stores shared between
// processes still get formatV1, so that processes of an earlier release,
// which know only formatV1, go on reading them during a rolling upgrade. Buckets appear in
// the limiter's canonical order, which the fingerprint pins. A new format
// takes a new version byte; decoders reject versions they do not know
// rather than guess.
const (
	formatV1 = 1
	formatV2 = 2
)

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

// encodeState appends the record of s to dst, in formatV2.
func encodeState(dst []byte, fp uint32, rules []Bucket, s *state) []byte {
	dst = append(dst, formatV2)
	dst = binary.BigEndian.AppendUint32(dst, fp)
	dst = binary.BigEndian.AppendUint64(dst, uint64(s.at))
	for i := range rules {
		dst = binary.BigEndian.AppendUint64(dst, uint64(s.levels[i].whole))
		dst = binary.BigEndian.AppendUint64(dst, uint64(s.levels[i].frac))
	}
	return dst
}

// encodeStateV1 appends the record of s to dst, in formatV1.
func encodeStateV1(dst []byte, fp uint32, rules []Bucket, s *state) []byte {
	dst = append(dst, formatV1)
	dst = binary.BigEndian.AppendUint32(dst, fp)
	dst = binary.AppendVarint(dst, s.at)
	for i := range rules {
		dst = binary.AppendUvarint(dst, uint64(s.levels[i].whole))
		dst = binary.AppendUvarint(dst, uint64(s.levels[i].frac))
	}
	return dst
}

// decodeState reads a record written by encodeState (or in formatV1). It
// checks every field against the buckets, so a decoded state always
// satisfies the algorithm's invariants. A well-formed record for other
// buckets returns errOtherBuckets; anything else that does not decode
// returns an error describing what is wrong.
func decodeState(b []byte, fp uint32, rules []Bucket) (state, error) {
	var s state
	err := decodeInto(&s, b, fp, rules)
	return s, err
}

// decodeInto is decodeState into *s, which it does not clear first.
func decodeInto(s *state, b []byte, fp uint32, rules []Bucket) error {
	if len(b) == 0 {
		return errors.New("empty record")
	}
	switch b[0] {
	case formatV2:
	case formatV1:
		return decodeV1(s, b, fp, rules)
	default:
		return fmt.Errorf("unknown record format %d", b[0])
	}
	if len(b) < 13 {
		return errors.New("truncated record header")
	}
	other := binary.BigEndian.Uint32(b[1:5]) != fp
	s.at = int64(binary.BigEndian.Uint64(b[5:13]))
	b = b[13:]
	if len(b)%16 != 0 || len(b) == 0 || len(b) > 16*MaxBuckets {
		return fmt.Errorf("levels of %d bytes", len(b))
	}
	if other {
		return errOtherBuckets
	}
	if len(b) != 16*len(rules) {
		return fmt.Errorf("%d buckets stored, %d expected", len(b)/16, len(rules))
	}
	for i, r := range rules {
		lv := b[16*i : 16*i+16]
		whole, frac := binary.BigEndian.Uint64(lv[:8]), binary.BigEndian.Uint64(lv[8:])
		if !levelOK(r, whole, frac) {
			return levelError(i, r, whole, frac)
		}
		s.levels[i] = level{whole: int64(whole), frac: int64(frac)}
	}
	return nil
}

// levelOK reports whether whole tokens plus frac of refill is a level
// bucket r can hold. It is small enough to inline into the decoders.
func levelOK(r Bucket, whole, frac uint64) bool {
	return whole < uint64(r.Capacity) && frac < uint64(r.Period) || whole == uint64(r.Capacity) && frac == 0
}

// levelError is the error for a decoded level of bucket i that r cannot
// hold.
func levelError(i int, r Bucket, whole, frac uint64) error {
	return fmt.Errorf("bucket %d: level %d+%d out of range for %v", i, whole, frac, r)
}

// decodeV1 reads a formatV1 record.
func decodeV1(s *state, b []byte, fp uint32, rules []Bucket) error {
	if len(b) < 5 {
		return errors.New("truncated record header")
	}
	other := binary.BigEndian.Uint32(b[1:5]) != fp
	b = b[5:]
	at, n := binary.Varint(b)
	if n <= 0 {
		return errors.New("bad time field")
	}
	s.at, b = at, b[n:]
	if other {
		// Check the shape only: pairs of uvarints to the end.
		for pairs := 0; len(b) > 0; pairs++ {
			if pairs == MaxBuckets {
				return errors.New("too many buckets")
			}
			for range 2 {
				if _, n := binary.Uvarint(b); n <= 0 {
					return errors.New("bad bucket field")
				} else {
					b = b[n:]
				}
			}
		}
		return errOtherBuckets
	}
	for i, r := range rules {
		whole, n := binary.Uvarint(b)
		if n <= 0 {
			return fmt.Errorf("bucket %d: bad token count", i)
		}
		b = b[n:]
		frac, n := binary.Uvarint(b)
		if n <= 0 {
			return fmt.Errorf("bucket %d: bad refill remainder", i)
		}
		b = b[n:]
		if !levelOK(r, whole, frac) {
			return levelError(i, r, whole, frac)
		}
		s.levels[i] = level{whole: int64(whole), frac: int64(frac)}
	}
	if len(b) != 0 {
		return fmt.Errorf("%d trailing bytes", len(b))
	}
	return nil
}
