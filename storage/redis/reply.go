package redis

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/sluice-go/sluice/storage"
)

// The layout of a Redis string under a sluice key (see doc.go). Both tags
// are bytes that never start valid UTF-8, so no text value can pass for a
// record.
const (
	tagRecord    = 0xF8 // live record: tag, version (8 bytes), value
	tagTombstone = 0xF9 // deleted record: tag, version (8 bytes)
	headerLen    = 1 + 8
)

// Script reply statuses; they must match scripts.go.
const (
	statusConflict = 0
	statusSwapped  = 1
	statusForeign  = 2
)

// errForeign says that a key holds a value sluice did not write.
var errForeign = errors.New("not a sluice record")

// decodeStored decodes the string stored under a key, as GET returns it.
// A tombstone reads as absent. The Value is a fresh copy.
func decodeStored(s string) (storage.Record, error) {
	if len(s) == headerLen && s[0] == tagTombstone {
		return storage.Record{}, nil
	}
	if len(s) < headerLen || s[0] != tagRecord {
		return storage.Record{}, errForeign
	}
	v := binary.BigEndian.Uint64([]byte(s[1:headerLen]))
	if v == 0 {
		return storage.Record{}, errForeign
	}
	return storage.Record{Value: []byte(s[headerLen:]), Version: v}, nil
}

// encodeVersion returns the script argument for an expected version: 8
// bytes big-endian, or "" for 0 (absent).
func encodeVersion(v uint64) string {
	if v == 0 {
		return ""
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return string(b[:])
}

// casReply is casScript's reply, decoded.
type casReply struct {
	swapped bool
	foreign bool
	version uint64         // the new version, when swapped
	current storage.Record // the record stored, on conflict
	now     time.Time      // the server's clock
}

// decodeCAS checks and decodes casScript's reply.
func decodeCAS(reply any) (casReply, error) {
	items, ok := reply.([]any)
	if !ok || len(items) < 3 {
		return casReply{}, fmt.Errorf("unexpected script reply %T %v", reply, reply)
	}
	status, ok := items[0].(int64)
	if !ok {
		return casReply{}, fmt.Errorf("unexpected script status %T %v", items[0], items[0])
	}
	now, err := decodeTime(items[1], items[2])
	if err != nil {
		return casReply{}, err
	}
	items = items[3:]
	switch {
	case status == statusSwapped && len(items) == 1:
		s, ok := items[0].(string)
		if !ok || len(s) != 8 {
			return casReply{}, fmt.Errorf("unexpected version in script reply: %T %q", items[0], items[0])
		}
		v := binary.BigEndian.Uint64([]byte(s))
		if v == 0 {
			return casReply{}, errors.New("script stored version 0")
		}
		return casReply{swapped: true, version: v, now: now}, nil
	case status == statusConflict && len(items) == 0:
		return casReply{now: now}, nil
	case status == statusConflict && len(items) == 1:
		s, ok := items[0].(string)
		if !ok {
			return casReply{}, fmt.Errorf("unexpected record in script reply: %T", items[0])
		}
		rec, err := decodeStored(s)
		if err != nil {
			return casReply{foreign: true, now: now}, nil
		}
		return casReply{current: rec, now: now}, nil
	case status == statusForeign && len(items) == 0:
		return casReply{foreign: true, now: now}, nil
	}
	return casReply{}, fmt.Errorf("unexpected script reply: status %d with %d items", status, len(items))
}

// decodeGet checks and decodes getScript's reply: the record (an error
// wrapping errForeign for a value that is not ours) and the server's
// clock.
func decodeGet(reply any) (storage.Record, time.Time, error) {
	items, ok := reply.([]any)
	if !ok || len(items) < 2 || len(items) > 3 {
		return storage.Record{}, time.Time{}, fmt.Errorf("unexpected script reply %T %v", reply, reply)
	}
	now, err := decodeTime(items[0], items[1])
	if err != nil {
		return storage.Record{}, time.Time{}, err
	}
	if len(items) == 2 {
		return storage.Record{}, now, nil
	}
	s, ok := items[2].(string)
	if !ok {
		return storage.Record{}, now, errForeign // another Redis type
	}
	rec, err := decodeStored(s)
	return rec, now, err
}

// decodeTime reads the two strings of Redis TIME.
func decodeTime(secs, micros any) (time.Time, error) {
	ss, ok1 := secs.(string)
	us, ok2 := micros.(string)
	if !ok1 || !ok2 {
		return time.Time{}, fmt.Errorf("unexpected server time in script reply: %T %T", secs, micros)
	}
	s, err1 := strconv.ParseInt(ss, 10, 64)
	u, err2 := strconv.ParseInt(us, 10, 64)
	if err1 != nil || err2 != nil || u < 0 || u >= 1e6 {
		return time.Time{}, fmt.Errorf("unexpected server time in script reply: %q %q", ss, us)
	}
	return time.Unix(s, u*1000), nil
}

// decodeDelete checks and decodes deleteScript's reply; it reports
// whether the key held a value that is not ours.
func decodeDelete(reply any) (foreign bool, err error) {
	status, ok := reply.(int64)
	if !ok {
		return false, fmt.Errorf("unexpected script reply %T %v", reply, reply)
	}
	switch status {
	case 0, 1:
		return false, nil
	case statusForeign:
		return true, nil
	}
	return false, fmt.Errorf("unexpected script status %d", status)
}
