package limiter_test

import (
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/storage/memory"
)

// FuzzParseBuckets feeds arbitrary text to ParseBuckets: it never panics,
// fails only with ErrInvalidBucket, and every bucket it returns is one New
// accepts, has the period its text says, and survives String and back.
func FuzzParseBuckets(f *testing.F) {
	for _, s := range []string{
		"5/10s", "5/10s, 100/h", "100/1h30m", "1000/d", "7/7d", "1/µs", "3/μs",
		" 1 / 250ms ,2/2s", "5/3652d", "5/3653d", "0/1s", "-5/1s", "5/-1s",
		"5/-1d", "5/0d", "+5/+1s", "1099511627776/87660h", "1099511627777/1s",
		"5/87660h0m1ns", "5/", "/5s", "5", ",", "5/1s,", "", " ", "5/1.5h",
		"5/1e3s", "5/1h1d", "5/ns", "9223372036854775807/1s",
		"5/-9223372036854775808d", "5/99999999999999999999d",
	} {
		f.Add(s)
	}
	store := memory.New()
	f.Cleanup(func() { store.Close() })
	f.Fuzz(func(t *testing.T, s string) {
		got, err := limiter.ParseBuckets(s)
		if err != nil {
			if !errors.Is(err, limiter.ErrInvalidBucket) {
				t.Fatalf("ParseBuckets(%q): error %v does not wrap ErrInvalidBucket", s, err)
			}
			if got != nil {
				t.Fatalf("ParseBuckets(%q) = %v with error %v", s, got, err)
			}
			return
		}
		items := strings.Split(s, ",")
		if len(got) != len(items) {
			t.Fatalf("ParseBuckets(%q) = %d buckets for %d items", s, len(got), len(items))
		}
		for i, b := range got {
			if _, err := limiter.New(store, []limiter.Bucket{b}); err != nil {
				t.Fatalf("ParseBuckets(%q)[%d] = %+v, which New refuses: %v", s, i, b, err)
			}
			checkPeriodText(t, items[i], b)
			again, err := limiter.ParseBuckets(b.String())
			if err != nil || len(again) != 1 || again[0] != b {
				t.Fatalf("ParseBuckets(%q) = %v, %v; want [%+v]", b.String(), again, err, b)
			}
		}
		// The list as Bucket.String writes it, joined as the doc writes it.
		var texts []string
		for _, b := range got {
			texts = append(texts, b.String())
		}
		joined := strings.Join(texts, ", ")
		again, err := limiter.ParseBuckets(joined)
		if err != nil || len(again) != len(got) {
			t.Fatalf("ParseBuckets(%q) = %v, %v; want %v", joined, again, err, got)
		}
		for i := range got {
			if again[i] != got[i] {
				t.Fatalf("ParseBuckets(%q)[%d] = %+v; want %+v", joined, i, again[i], got[i])
			}
		}
	})
}

// checkPeriodText checks an accepted item's period against its text with
// exact arithmetic: no negative period, and n days is exactly n*24h.
func checkPeriodText(t *testing.T, item string, b limiter.Bucket) {
	t.Helper()
	_, p, _ := strings.Cut(strings.TrimSpace(item), "/")
	p = strings.TrimSpace(p)
	if strings.HasPrefix(p, "-") {
		t.Fatalf("item %q has a negative period, yet gives %+v", item, b)
	}
	days, ok := strings.CutSuffix(p, "d")
	if !ok {
		return
	}
	if days == "" {
		days = "1"
	}
	n, ok := new(big.Int).SetString(days, 10)
	if !ok {
		t.Fatalf("item %q: %q days is not a whole number, yet gives %+v", item, days, b)
	}
	want := n.Mul(n, big.NewInt(int64(24*time.Hour)))
	if want.Cmp(big.NewInt(int64(b.Period))) != 0 {
		t.Fatalf("item %q is %v ns, but gives period %v (%d ns)", item, want, b.Period, int64(b.Period))
	}
}

// FuzzBucketString checks that every valid Bucket's String parses back to
// the same Bucket, and that an invalid one never parses.
func FuzzBucketString(f *testing.F) {
	f.Add(int64(5), int64(10*time.Second))
	f.Add(int64(1), int64(1))
	f.Add(int64(limiter.MaxCapacity), int64(limiter.MaxPeriod))
	f.Add(int64(100), int64(90*time.Minute))
	f.Add(int64(3), int64(1500*time.Microsecond))
	f.Add(int64(3), int64(24*time.Hour))
	f.Add(int64(0), int64(time.Second))
	f.Add(int64(7), int64(-time.Second))
	f.Fuzz(func(t *testing.T, capacity, period int64) {
		b := limiter.Bucket{Capacity: capacity, Period: time.Duration(period)}
		valid := capacity >= 1 && capacity <= limiter.MaxCapacity && period >= 1 && period <= int64(limiter.MaxPeriod)
		got, err := limiter.ParseBuckets(b.String())
		if !valid {
			if err == nil {
				t.Fatalf("ParseBuckets(%q) of an invalid bucket = %v", b.String(), got)
			}
			return
		}
		if err != nil || len(got) != 1 || got[0] != b {
			t.Fatalf("ParseBuckets(%q) = %v, %v; want [%+v]", b.String(), got, err, b)
		}
	})
}
