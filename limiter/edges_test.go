package limiter

import (
	"context"
	"testing"
	"time"

	"github.com/sluice-go/sluice/internal/fakeclock"
	"github.com/sluice-go/sluice/storage/memory"
)

// TestRefund gives tokens back: refilled to now first, never above
// Capacity, and a bucket that reaches Capacity is full, its remainder
// dropped (a full bucket holds no partial token).
func TestRefund(t *testing.T) {
	rules := []Bucket{{Capacity: 5, Period: 10 * time.Second}} // a token every 2s
	const t0 = int64(1_700_000_000_000_000_000)
	half := int64(5 * time.Second) // half a token, in units of frac
	for _, c := range []struct {
		name string
		from level
		at   time.Duration // of the refund, after t0
		n    int64
		want level
	}{
		{"adds", level{whole: 2}, 0, 1, level{whole: 3}},
		{"keeps the remainder", level{whole: 1, frac: half}, 0, 2, level{whole: 3, frac: half}},
		{"reaches capacity exactly", level{whole: 3, frac: half}, 0, 2, level{whole: 5}},
		{"capped", level{whole: 4}, 0, 3, level{whole: 5}},
		{"refills first", level{whole: 1}, 3 * time.Second, 1, level{whole: 3, frac: half}},
		{"refill reaches capacity", level{whole: 3, frac: half}, time.Second, 1, level{whole: 5}},
		{"clock back refills nothing", level{whole: 1, frac: half}, -time.Second, 1, level{whole: 2, frac: half}},
	} {
		s := fullState(rules, t0)
		s.levels[0] = c.from
		refund(rules, &s, t0+int64(c.at), c.n)
		if s.levels[0] != c.want {
			t.Errorf("%s: refund %d of %+v after %v = %+v, want %+v", c.name, c.n, c.from, c.at, s.levels[0], c.want)
		}
		if _, err := decodeState(encodeState(nil, fingerprint(rules), rules, &s), fingerprint(rules), rules); err != nil {
			t.Errorf("%s: the refunded state does not decode: %v", c.name, err)
		}
	}
}

// TestRefundToCapacityInProcess: a refund that fills a partly refilled
// bucket leaves a record the next call can read.
func TestRefundToCapacityInProcess(t *testing.T) {
	mem := memory.New()
	defer mem.Close()
	clock := fakeclock.New(time.Unix(1_700_000_000, 0))
	lim, err := New(mem, []Bucket{{Capacity: 2, Period: 10 * time.Second}}, WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := lim.AllowN(ctx, "k", 2); err != nil {
		t.Fatal(err)
	}
	clock.Advance(7500 * time.Millisecond) // 1.5 tokens back
	if err := lim.Refund(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	if d, err := lim.Allow(ctx, "k"); err != nil || !d.Allowed || d.Remaining != 1 {
		t.Errorf("after refilling 1.5 tokens and a refund of 1: %+v, %v; want allowed, 1 left", d, err)
	}
}

// TestDecodeStateOtherBuckets: a well-formed record for other buckets,
// however many, is errOtherBuckets in both formats (the key starts
// afresh); a malformed one is an error like any other.
func TestDecodeStateOtherBuckets(t *testing.T) {
	rules := []Bucket{{Capacity: 5, Period: 10 * time.Second}, {Capacity: 100, Period: time.Hour}}
	fp := fingerprint(rules)
	otherRules := func(n int) []Bucket {
		var bs []Bucket
		for i := range n {
			bs = append(bs, Bucket{Capacity: 7, Period: time.Duration(i+1) * time.Second})
		}
		return bs
	}
	encoded := func(encode func([]byte, uint32, []Bucket, *state) []byte, n int) []byte {
		r := otherRules(min(n, MaxBuckets))
		s := fullState(r, 42)
		b := encode(nil, fingerprint(r), r, &s)
		for range n - MaxBuckets { // beyond MaxBuckets: repeat the last level
			b = append(b, b[len(b)-2:]...)
		}
		return b
	}
	v1 := encoded(encodeStateV1, 1)
	for _, c := range []struct {
		name  string
		rec   []byte
		other bool // want errOtherBuckets, else another error
	}{
		{"v2 one bucket", encoded(encodeState, 1), true},
		{"v2 three buckets", encoded(encodeState, 3), true},
		{"v2 MaxBuckets", encoded(encodeState, MaxBuckets), true},
		{"v2 no levels", encoded(encodeState, 1)[:13], false},
		{"v2 half a level", encoded(encodeState, 1)[:21], false},
		{"v1 one bucket", encoded(encodeStateV1, 1), true},
		{"v1 MaxBuckets", encoded(encodeStateV1, MaxBuckets), true},
		{"v1 MaxBuckets+1", encoded(encodeStateV1, MaxBuckets+1), false},
		{"v1 truncated level", v1[:len(v1)-1], false},
	} {
		_, err := decodeState(c.rec, fp, rules)
		if c.other && err != errOtherBuckets || !c.other && (err == nil || err == errOtherBuckets) {
			t.Errorf("%s (% x): err = %v, want errOtherBuckets %t", c.name, c.rec, err, c.other)
		}
	}
}
