package redis

import (
	"encoding/binary"
	"errors"
	"strconv"
	"testing"

	"github.com/sluice-go/sluice/storage"
)

// luaClass classifies a stored string as casScript and deleteScript do:
// 'L' a live record, 'T' a tombstone, 'F' anything else (foreign).
func luaClass(s string) byte {
	switch {
	case len(s) >= headerLen && s[0] == tagRecord && s[1:headerLen] != "\x00\x00\x00\x00\x00\x00\x00\x00":
		return 'L'
	case len(s) == headerLen && s[0] == tagTombstone:
		return 'T'
	}
	return 'F'
}

// checkStored checks a record decoded from stored string s against the
// scripts' reading of it.
func checkStored(t *testing.T, s string, rec storage.Record, err error) {
	t.Helper()
	switch luaClass(s) {
	case 'L':
		if err != nil || rec.Version != binary.BigEndian.Uint64([]byte(s[1:headerLen])) || string(rec.Value) != s[headerLen:] || rec.Value == nil {
			t.Fatalf("live record %q decoded as %+v, %v", s, rec, err)
		}
	case 'T':
		if err != nil || rec.Version != 0 || rec.Value != nil {
			t.Fatalf("tombstone %q decoded as %+v, %v; want absent", s, rec, err)
		}
	default:
		if !errors.Is(err, errForeign) || rec.Version != 0 {
			t.Fatalf("foreign value %q decoded as %+v, %v; want errForeign", s, rec, err)
		}
	}
}

// FuzzDecodeStored feeds arbitrary strings to decodeStored, as GET or
// another program may leave them: it classifies each exactly as the Lua
// scripts do, so nothing the scripts call foreign reads as a record.
func FuzzDecodeStored(f *testing.F) {
	f.Add("\xf8\x00\x00\x00\x00\x00\x00\x00\x01state")
	f.Add("\xf8\x00\x00\x00\x00\x00\x00\x00\x01")
	f.Add("\xf8\x00\x00\x00\x00\x00\x00\x00\x00state")
	f.Add("\xf9\x00\x00\x00\x00\x00\x00\x00\x05")
	f.Add("\xf9\x00\x00\x00\x00\x00\x00\x00\x05x")
	f.Add("\xf8\x01")
	f.Add("plain text")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		rec, err := decodeStored(s)
		checkStored(t, s, rec, err)
	})
}

// FuzzDecodeCAS feeds arbitrary replies to decodeCAS: it never panics, and
// reports a swap, a conflict with a live record or a foreign key only for
// a reply casScript could have sent that way.
func FuzzDecodeCAS(f *testing.F) {
	f.Add("1\x00\x00\x00\x00\x00\x00\x00\x07", false)
	f.Add("11700000000 123456 \x00\x00\x00\x00\x00\x00\x00\x07", true)
	f.Add("0", false)
	f.Add("01700000000 999999 ", true)
	f.Add("0\xf8\x00\x00\x00\x00\x00\x00\x00\x03state", false)
	f.Add("01700000000 0 \xf8\x00\x00\x00\x00\x00\x00\x00\x03state", true)
	f.Add("0\xf9\x00\x00\x00\x00\x00\x00\x00\x03", false)
	f.Add("0garbage", false)
	f.Add("2", false)
	f.Add("21 2 ", true)
	f.Add("1\x00\x00\x00\x00\x00\x00\x00\x00", false)
	f.Add("1 1000000 ", true)
	f.Add("1-1 -1 ", true)
	f.Add("", true)
	f.Fuzz(func(t *testing.T, reply string, timed bool) {
		r, err := decodeCAS(reply, timed)
		if err != nil {
			if r.swapped || r.foreign || r.version != 0 || r.current.Version != 0 || r.current.Value != nil || !r.now.IsZero() {
				t.Fatalf("decodeCAS(%q) = %+v with error %v", reply, r, err)
			}
			return
		}
		status, rest := splitReply(t, reply, timed)
		if timed && r.now.Nanosecond()%1000 != 0 {
			t.Fatalf("decodeCAS(%q): server time %v finer than a microsecond", reply, r.now)
		}
		switch {
		case r.swapped:
			if r.foreign || status != statusSwapped || len(rest) != 8 || r.version == 0 || r.version != binary.BigEndian.Uint64([]byte(rest)) || r.current.Version != 0 {
				t.Fatalf("decodeCAS(%q) = %+v: not a swap reply", reply, r)
			}
		case r.foreign:
			if !(status == statusForeign && rest == "" || status == statusConflict && luaClass(rest) == 'F' && rest != "") {
				t.Fatalf("decodeCAS(%q) = %+v: not a foreign reply", reply, r)
			}
		default:
			if status != statusConflict {
				t.Fatalf("decodeCAS(%q) = %+v: conflict with status %q", reply, r, status)
			}
			if rest == "" {
				if r.current.Version != 0 {
					t.Fatalf("decodeCAS(%q) = %+v: record from nothing", reply, r)
				}
				return
			}
			checkStored(t, rest, r.current, nil)
		}
	})
}

// FuzzDecodeGet feeds arbitrary replies to decodeGet: it never panics, and
// returns a record only when getScript's reply carries one in the layout.
func FuzzDecodeGet(f *testing.F) {
	f.Add("11700000000 5 \xf8\x00\x00\x00\x00\x00\x00\x00\x03state")
	f.Add("11700000000 5 \xf9\x00\x00\x00\x00\x00\x00\x00\x03")
	f.Add("11700000000 5 text")
	f.Add("01700000000 5 ")
	f.Add("21700000000 5 ")
	f.Add("31 2 ")
	f.Add("1 ")
	f.Add("")
	f.Fuzz(func(t *testing.T, reply string) {
		rec, now, err := decodeGet(reply)
		if err != nil && !errors.Is(err, errForeign) {
			if rec.Version != 0 || rec.Value != nil || !now.IsZero() {
				t.Fatalf("decodeGet(%q) = %+v, %v with error %v", reply, rec, now, err)
			}
			return
		}
		status, rest := splitReply(t, reply, true)
		switch status {
		case statusSwapped:
			checkStored(t, rest, rec, err)
		case statusConflict, statusForeign:
			if rest != "" || rec.Version != 0 || rec.Value != nil || (status == statusForeign) != (err != nil) {
				t.Fatalf("decodeGet(%q) = %+v, %v", reply, rec, err)
			}
		default:
			t.Fatalf("decodeGet(%q) accepted status %q", reply, status)
		}
	})
}

// splitReply splits a reply the decoder accepted into its status and
// payload, checking the clock fields are two decimal numbers.
func splitReply(t *testing.T, reply string, timed bool) (byte, string) {
	t.Helper()
	status, rest := reply[0], reply[1:]
	if !timed {
		return status, rest
	}
	for range 2 {
		i := 0
		for i < len(rest) && rest[i] != ' ' {
			i++
		}
		if _, err := strconv.ParseInt(rest[:i], 10, 64); err != nil || i == len(rest) {
			t.Fatalf("reply %q accepted with a clock field %q", reply, rest[:i])
		}
		rest = rest[i+1:]
	}
	return status, rest
}

// FuzzDecodeDelete feeds deleteScript replies of any type and value to
// decodeDelete: only the integers 0, 1 and 2 are accepted.
func FuzzDecodeDelete(f *testing.F) {
	for _, n := range []int64{0, 1, 2, 3, -1} {
		f.Add(uint8(0), n, "")
	}
	f.Add(uint8(1), int64(0), "1")
	f.Add(uint8(2), int64(0), "")
	f.Add(uint8(3), int64(2), "2")
	f.Fuzz(func(t *testing.T, kind uint8, n int64, s string) {
		var reply any
		switch kind % 4 {
		case 0:
			reply = n
		case 1:
			reply = s
		case 2:
			reply = nil
		default:
			reply = []any{n, s}
		}
		foreign, err := decodeDelete(reply)
		ok := kind%4 == 0 && n >= 0 && n <= 2
		if (err == nil) != ok || foreign != (ok && n == 2) {
			t.Fatalf("decodeDelete(%#v) = %v, %v", reply, foreign, err)
		}
	})
}
