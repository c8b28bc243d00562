package limiter

import (
	"bytes"
	"context"
	"math/big"
	"testing"
	"time"

	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/memory"
)

// Both formats round-trip, and are checked against the buckets: formatV2,
// which in-process stores get, and formatV1, which shared stores get.
func TestStateRoundTrip(t *testing.T) {
	rules := []Bucket{{Capacity: 5, Period: 10 * time.Second}, {Capacity: MaxCapacity, Period: MaxPeriod}}
	fp := fingerprint(rules)
	st := fullState(rules, -42)
	st.levels[0] = level{whole: 2, frac: 123}
	st.levels[1] = level{whole: 0, frac: int64(MaxPeriod) - 1}
	other := []Bucket{{Capacity: 6, Period: 10 * time.Second}, {Capacity: MaxCapacity, Period: MaxPeriod}}
	for name, encode := range map[string]func([]byte, uint32, []Bucket, *state) []byte{"v2": encodeState, "v1": encodeStateV1} {
		rec := encode(nil, fp, rules, &st)
		got, err := decodeState(rec, fp, rules)
		if err != nil || got != st {
			t.Fatalf("%s: decode(encode(%+v)) = %+v, %v", name, st, got, err)
		}
		if _, err := decodeState(rec, fp, rules[:1]); err == nil {
			t.Errorf("%s: decoding two buckets as one: no error", name)
		}
		if _, err := decodeState(rec, fingerprint(other), other); err != errOtherBuckets {
			t.Errorf("%s: decoding for other buckets: %v, want errOtherBuckets", name, err)
		}
	}
}

// Records of the first format are checked as closely as the second's.
func TestDecodeStateV1Rejects(t *testing.T) {
	rules := []Bucket{{Capacity: 5, Period: 10 * time.Second}, {Capacity: MaxCapacity, Period: MaxPeriod}}
	fp := fingerprint(rules)
	st := fullState(rules, -42)
	st.levels[0] = level{whole: 2, frac: 123}
	st.levels[1] = level{whole: 0, frac: int64(MaxPeriod) - 1}
	rec := encodeStateV1(nil, fp, rules, &st)
	bad := st
	bad.levels[0] = level{whole: 6}
	for name, b := range map[string][]byte{
		"trailing":  append(bytes.Clone(rec), 0),
		"truncated": rec[:len(rec)-1],
		"too many":  encodeStateV1(nil, fp, rules, &bad),
	} {
		if _, err := decodeState(b, fp, rules); err == nil || err == errOtherBuckets {
			t.Errorf("v1 %s: err = %v, want a decode error", name, err)
		}
	}
}

func TestDecodeStateRejects(t *testing.T) {
	rules := []Bucket{{Capacity: 5, Period: 10}}
	fp := fingerprint(rules)
	good := encodeState(nil, fp, rules, &state{at: 7, levels: [MaxBuckets]level{{whole: 1, frac: 3}}})
	for name, b := range map[string][]byte{
		"empty":          {},
		"unknown format": append([]byte{9}, good[1:]...),
		"short levels":   good[:len(good)-1],
		"two buckets":    append(bytes.Clone(good), good[13:]...),
		"text":           []byte("not a record"),
		"short header":   good[:3],
		"no levels":      good[:6],
		"trailing byte":  append(bytes.Clone(good), 0),
		"too many":       encodeState(nil, fp, rules, &state{levels: [MaxBuckets]level{{whole: 6}}}),
		"frac too big":   encodeState(nil, fp, rules, &state{levels: [MaxBuckets]level{{whole: 1, frac: 10}}}),
		"full with frac": encodeState(nil, fp, rules, &state{levels: [MaxBuckets]level{{whole: 5, frac: 1}}}),
	} {
		if _, err := decodeState(b, fp, rules); err == nil || err == errOtherBuckets {
			t.Errorf("%s (% x): err = %v, want a decode error", name, b, err)
		}
	}
}

var fuzzRules = []Bucket{{Capacity: 5, Period: 10 * time.Second}, {Capacity: 1000, Period: time.Hour}}

// FuzzDecodeState feeds arbitrary records to the decoder: it must never
// panic, and whatever it accepts must satisfy the algorithm's invariants
// and encode back to a record that decodes to the same state.
func FuzzDecodeState(f *testing.F) {
	fp := fingerprint(fuzzRules)
	st := fullState(fuzzRules, 1_700_000_000_000_000_000)
	f.Add(encodeState(nil, fp, fuzzRules, &st))
	st.levels[0] = level{whole: 0, frac: 12345}
	f.Add(encodeState(nil, fp, fuzzRules, &st))
	f.Add([]byte{1, 0, 0, 0, 0})
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeState(b, fp, fuzzRules)
		if err != nil {
			return
		}
		for i, r := range fuzzRules {
			l := s.levels[i]
			if l.whole < 0 || l.whole > r.Capacity || l.frac < 0 || l.frac >= int64(r.Period) {
				t.Fatalf("decoded level %d out of range: %+v", i, l)
			}
		}
		again, err := decodeState(encodeState(nil, fp, fuzzRules, &s), fp, fuzzRules)
		if err != nil || again != s {
			t.Fatalf("re-encoding %+v gives %+v, %v", s, again, err)
		}
	})
}

// FuzzDecide plays a call sequence against one bucket: levels stay within
// [0, Capacity], a denial takes nothing, and the cost admitted by time t
// never exceeds C + floor(t*C/P).
func FuzzDecide(f *testing.F) {
	f.Add(int64(5), int64(10*time.Second), []byte{1, 0, 1, 0, 1, 0, 200, 3})
	f.Add(int64(MaxCapacity), int64(MaxPeriod), []byte{255, 255, 0, 1})
	f.Add(int64(3), int64(10), []byte{3, 1, 1, 1, 0, 2})
	f.Fuzz(func(t *testing.T, capacity, period int64, steps []byte) {
		b := Bucket{Capacity: capacity, Period: time.Duration(period)}
		if b.validate() != nil {
			return
		}
		rules := []Bucket{b}
		st := fullState(rules, 0)
		var now, admitted int64
		for i := 0; i+1 < len(steps); i += 2 {
			// A step's time: a byte scaled to the period, sometimes
			// backwards.
			dt := int64(steps[i]) * (period/64 + 1)
			if steps[i]%17 == 0 {
				dt = -dt
			}
			now += dt
			cost := 1 + int64(steps[i+1])%capacity
			next, d := advanced(rules, st, now, cost, true)
			if d.Allowed {
				admitted += cost
				st = next
			} else if d.RetryAfter <= 0 {
				t.Fatalf("denied with RetryAfter %v", d.RetryAfter)
			}
			l := next.levels[0]
			if l.whole < 0 || l.whole > capacity || l.frac < 0 || l.frac >= period {
				t.Fatalf("level out of range: %+v", l)
			}
			if st.at > 0 {
				bound := new(big.Int).Mul(big.NewInt(st.at), big.NewInt(capacity))
				bound.Quo(bound, big.NewInt(period)).Add(bound, big.NewInt(capacity))
				if big.NewInt(admitted).Cmp(bound) > 0 {
					t.Fatalf("admitted %d by %d, more than %v", admitted, st.at, bound)
				}
			}
		}
	})
}

// Shared stores get formatV1, which earlier releases read; in-process
// stores get formatV2.
func TestFormatWritten(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	defer mem.Close()
	for _, c := range []struct {
		name  string
		store storage.Store
		want  byte
	}{
		{"shared", struct{ storage.Store }{mem}, formatV1},
		{"in-process", mem, formatV2},
	} {
		l, err := New(c.store, []Bucket{{Capacity: 5, Period: time.Minute}}, WithName(c.name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Allow(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		rec, err := mem.Get(ctx, l.prefix+"k")
		if err != nil || rec.Version == 0 || rec.Value[0] != c.want {
			t.Errorf("%s store: record %v, %v; want format %d", c.name, rec, err, c.want)
		}
	}
}

// The fingerprint is part of every stored record and of a named limiter's
// keys: it must not change between releases, or every stored limit would
// start afresh on upgrade and processes of two releases would not share
// their counts.
func TestFingerprintIsStable(t *testing.T) {
	rules := []Bucket{{Capacity: 5, Period: 10 * time.Second}, {Capacity: 100, Period: time.Hour}}
	if got := fingerprint(rules); got != 0x1143efa1 {
		t.Fatalf("fingerprint(%v) = %#x, want 0x1143efa1", rules, got)
	}
}
