package limiter_test

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-go/sluice/limiter"
)

func TestParseBuckets(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []limiter.Bucket
	}{
		{"5/10s", []limiter.Bucket{{5, 10 * time.Second}}},
		{"5/10s, 100/h", []limiter.Bucket{{5, 10 * time.Second}, {100, time.Hour}}},
		{" 1/ms ,2/1h30m,3/7d", []limiter.Bucket{{1, time.Millisecond}, {2, 90 * time.Minute}, {3, 7 * 24 * time.Hour}}},
		{"1099511627776/1ns", []limiter.Bucket{{limiter.MaxCapacity, 1}}},
		// A period starting with a point is a fraction, as time.ParseDuration reads it.
		{"5/.5s, 2/0.25h", []limiter.Bucket{{5, 500 * time.Millisecond}, {2, 15 * time.Minute}}},
		{"3/µs, 4/+2s", []limiter.Bucket{{3, time.Microsecond}, {4, 2 * time.Second}}},
	} {
		got, err := limiter.ParseBuckets(c.in)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("ParseBuckets(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", " ", "5", "5/", "/10s", "x/10s", "5/10", "5/ten", "0/1s", "-1/1s", "5/0s", "5/-1s",
		"5/10s,", "1099511627777/1s", "1/87661h", "1/3653d", "1/99999999999999999999d", "5/10s;6/1m"} {
		got, err := limiter.ParseBuckets(in)
		if !errors.Is(err, limiter.ErrInvalidBucket) {
			t.Errorf("ParseBuckets(%q) = %v, %v; want ErrInvalidBucket", in, got, err)
			continue
		}
		// The error quotes the item at fault as it was written.
		if item := strings.TrimSpace(in); item != "" && !strings.Contains(item, ",") && !strings.Contains(err.Error(), strconv.Quote(item)) {
			t.Errorf("ParseBuckets(%q): error %q does not quote the item", in, err)
		}
	}
}

// TestParseBucketsSaysWhy: a number too large for its field is said to
// be out of range, not malformed, and an item too long to quote whole is
// quoted cut short.
func TestParseBucketsSaysWhy(t *testing.T) {
	for in, want := range map[string]string{
		"99999999999999999999/1s":          "capacity must be between 1 and 1099511627776",
		"-99999999999999999999/1s":         "capacity must be between 1 and 1099511627776",
		"5/9999999h":                       "period must be between 1ns and 87660h0m0s",
		"5/99999999999999999999999ns":      "period must be between 1ns and 87660h0m0s",
		"5/ten":                            `period "ten": want a duration such as 10s, 1m or 1h`,
		"x/1s":                             `capacity "x" is not a whole number`,
		"5/" + strings.Repeat("x", 1<<20):  `invalid bucket "5/` + strings.Repeat("x", 62) + `"... (1048578 bytes): period "` + strings.Repeat("x", 64) + `"... (1048576 bytes): want`,
		strings.Repeat(" ", 1<<20):         `no buckets in "` + strings.Repeat(" ", 64) + `"... (1048576 bytes)`,
		"5/" + strings.Repeat("\x80", 100): `period "\x80\x80`,
	} {
		_, err := limiter.ParseBuckets(in)
		if !errors.Is(err, limiter.ErrInvalidBucket) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseBuckets(%.40q): %.300v; want ErrInvalidBucket saying %.200q", in, err, want)
		}
		if err != nil && len(err.Error()) > 600 {
			t.Errorf("ParseBuckets(%.40q): an error of %d bytes", in, len(err.Error()))
		}
	}
}

func TestBucketStringRoundTrips(t *testing.T) {
	for _, b := range []limiter.Bucket{
		{5, 10 * time.Second}, {100, time.Hour}, {1, 1}, {3, 1500 * time.Millisecond}, {7, 90 * time.Minute},
		{1, 1001 * time.Microsecond}, {limiter.MaxCapacity, limiter.MaxPeriod}, {2, 36 * time.Hour}, {9, time.Hour + 1},
	} {
		got, err := limiter.ParseBuckets(b.String())
		if err != nil || len(got) != 1 || got[0] != b {
			t.Errorf("ParseBuckets(%v.String() = %q) = %v, %v", b, b.String(), got, err)
		}
	}
	if got, want := (limiter.Bucket{Capacity: 5, Period: 10 * time.Second}).String(), "5/10s"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
