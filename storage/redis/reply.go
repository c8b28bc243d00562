package redis

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
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

// Script reply statuses, the first byte of a reply; they must match
// scripts.go.
const (
	statusConflict = '0' // casScript: not swapped; getScript: absent
	statusSwapped  = '1' // casScript: swapped; getScript: a value follows
	statusForeign  = '2' // the key holds something that is not ours
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

// appendVersion appends the script argument for an expected version to
// b: 8 bytes big-endian, or nothing for 0 (absent).
func appendVersion(b []byte, v uint64) []byte {
	if v == 0 {
		return b
	}
	return binary.BigEndian.AppendUint64(b, v)
}

// casReply is casScript's reply, decoded.
type casReply struct {
	swapped bool
	foreign bool
	version uint64         // the new version, when swapped
	current storage.Record // the record stored, on conflict
	now     time.Time      // the server's clock, when asked for
}

// decodeCAS checks and decodes casScript's reply; timed says whether the
// script was asked for the server's clock.
func decodeCAS(reply string, timed bool) (casReply, error) {
	status, now, rest, err := decodeHead(reply, timed)
	if err != nil {
		return casReply{}, err
	}
	switch {
	case status == statusSwapped && len(rest) == 8:
		v := binary.BigEndian.Uint64([]byte(rest))
		if v == 0 {
			return casReply{}, errors.New("script stored version 0")
		}
		return casReply{swapped: true, version: v, now: now}, nil
	case status == statusConflict && rest == "":
		return casReply{now: now}, nil
	case status == statusConflict:
		rec, err := decodeStored(rest)
		if err != nil {
			return casReply{foreign: true, now: now}, nil
		}
		return casReply{current: rec, now: now}, nil
	case status == statusForeign && rest == "":
		return casReply{foreign: true, now: now}, nil
	}
	return casReply{}, fmt.Errorf("unexpected script reply: status %q with %d more bytes", status, len(rest))
}

// decodeGet checks and decodes getScript's reply: the record (an error
// wrapping errForeign for a value that is not ours) and the server's
// clock.
func decodeGet(reply string) (storage.Record, time.Time, error) {
	status, now, rest, err := decodeHead(reply, true)
	if err != nil {
		return storage.Record{}, time.Time{}, err
	}
	switch {
	case status == statusConflict && rest == "":
		return storage.Record{}, now, nil
	case status == statusSwapped:
		rec, err := decodeStored(rest)
		return rec, now, err
	case status == statusForeign && rest == "":
		return storage.Record{}, now, errForeign // another Redis type
	}
	return storage.Record{}, time.Time{}, fmt.Errorf("unexpected script reply: status %q with %d more bytes", status, len(rest))
}

// decodeHead splits a script reply into its status byte, the server's
// clock (when timed) and the rest.
func decodeHead(reply string, timed bool) (status byte, now time.Time, rest string, err error) {
	if reply == "" {
		return 0, time.Time{}, "", errors.New("empty script reply")
	}
	status, rest = reply[0], reply[1:]
	if !timed {
		return status, time.Time{}, rest, nil
	}
	secs, rest, ok1 := strings.Cut(rest, " ")
	micros, rest, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 {
		return 0, time.Time{}, "", fmt.Errorf("no server time in script reply %q", reply)
	}
	now, err = decodeTime(secs, micros)
	return status, now, rest, err
}

// decodeTime reads the two numbers of Redis TIME.
func decodeTime(secs, micros string) (time.Time, error) {
	s, err1 := strconv.ParseInt(secs, 10, 64)
	u, err2 := strconv.ParseInt(micros, 10, 64)
	if err1 != nil || err2 != nil || u < 0 || u >= 1e6 {
		return time.Time{}, fmt.Errorf("unexpected server time in script reply: %q %q", secs, micros)
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
	case 2:
		return true, nil
	}
	return false, fmt.Errorf("unexpected script status %d", status)
}
