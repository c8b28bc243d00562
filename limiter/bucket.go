package limiter

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Bounds of a Bucket. Within them the arithmetic is exact and cannot
// overflow.
const (
	// MaxCapacity is the largest Capacity a Bucket may have.
	MaxCapacity = 1 << 40
	// MaxPeriod is the longest Period a Bucket may have: ten years of
	// 365.25 days.
	MaxPeriod = 87660 * time.Hour
	// MaxBuckets is the most buckets one Limiter may combine.
	MaxBuckets = 8
)

// Bucket is one token bucket: it holds at most Capacity tokens, starts
// full, and refills continuously at Capacity tokens per Period, so an empty
// bucket is full again after Period. Bucket{Capacity: 5, Period: 10 *
// time.Second} admits a burst of 5 and then one call every 2 seconds.
type Bucket struct {
	Capacity int64         // tokens when full; 1 to MaxCapacity
	Period   time.Duration // time to refill from empty to full; 1ns to MaxPeriod
}

// String returns the bucket as "capacity/period", for example "5/10s" or
// "100/1h".
func (b Bucket) String() string {
	return strconv.FormatInt(b.Capacity, 10) + "/" + formatPeriod(b.Period)
}

// validate reports why b is not a usable bucket.
func (b Bucket) validate() error {
	if why := b.outOfRange(); why != "" {
		return fmt.Errorf("%w %v: %s", ErrInvalidBucket, b, why)
	}
	return nil
}

// outOfRange says what is out of range in b, or returns "".
func (b Bucket) outOfRange() string {
	if b.Capacity < 1 || b.Capacity > MaxCapacity {
		return fmt.Sprintf("capacity must be between 1 and %d", int64(MaxCapacity))
	}
	if b.Period < 1 || b.Period > MaxPeriod {
		return fmt.Sprintf("period must be between 1ns and %v", MaxPeriod)
	}
	return ""
}

// formatPeriod writes d in the largest whole unit that divides it exactly,
// so that "10s" is not spelt "10000ms".
func formatPeriod(d time.Duration) string {
	units := []struct {
		size time.Duration
		name string
	}{
		{time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"},
		{time.Millisecond, "ms"}, {time.Microsecond, "us"},
	}
	for _, u := range units {
		if d >= u.size && d%u.size == 0 {
			return strconv.FormatInt(int64(d/u.size), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(d), 10) + "ns"
}

// ParseBuckets reads buckets written as comma-separated "capacity/period"
// pairs, the form Bucket.String writes: "5/10s, 100/1h". A period is a
// time.ParseDuration string ("10s", "1h30m", "250ms") or a whole number of
// days ("7d"), and a bare unit means one of it ("100/h", "1000/d").
// Spaces around items are ignored. Each bucket is checked as New checks
// it (Capacity and Period in range); errors wrap ErrInvalidBucket and quote
// the item at fault. The list as a whole (no bucket twice, at most
// MaxBuckets) is checked by New.
func ParseBuckets(s string) ([]Bucket, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("%w: no buckets in %s", ErrInvalidBucket, quoteShort(s))
	}
	var out []Bucket
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		b, err := parseBucket(item)
		if err != nil {
			return nil, fmt.Errorf("%w %s: %v", ErrInvalidBucket, quoteShort(item), err)
		}
		if why := b.outOfRange(); why != "" {
			return nil, fmt.Errorf("%w %s: %s", ErrInvalidBucket, quoteShort(item), why)
		}
		out = append(out, b)
	}
	return out, nil
}

func parseBucket(item string) (Bucket, error) {
	capText, periodText, ok := strings.Cut(item, "/")
	if !ok {
		return Bucket{}, errors.New(`want "capacity/period", as in "5/10s"`)
	}
	capacity, err := strconv.ParseInt(strings.TrimSpace(capText), 10, 64)
	switch {
	case errors.Is(err, strconv.ErrRange):
		return Bucket{}, fmt.Errorf("capacity must be between 1 and %d", int64(MaxCapacity))
	case err != nil:
		return Bucket{}, fmt.Errorf("capacity %s is not a whole number", quoteShort(capText))
	}
	period, err := parsePeriod(strings.TrimSpace(periodText))
	if err != nil {
		return Bucket{}, err
	}
	return Bucket{Capacity: capacity, Period: period}, nil
}

func parsePeriod(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("missing period")
	}
	text := s // as written, for errors
	if c := s[0] | 0x20; c >= 'a' && c <= 'z' || s[0] >= 0x80 {
		s = "1" + s // a bare unit is one of it: "h" means "1h" ("µs" too)
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 64)
		if err != nil || n < 1 || n > int64(MaxPeriod/(24*time.Hour)) {
			return 0, fmt.Errorf("period %s is not a whole number of days from 1 to %d", quoteShort(text), int64(MaxPeriod/(24*time.Hour)))
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		if tooLong(s) {
			return 0, fmt.Errorf("period must be between 1ns and %v", MaxPeriod)
		}
		return 0, fmt.Errorf("period %s: want a duration such as 10s, 1m or 1h", quoteShort(text))
	}
	return d, nil
}

// tooLong reports whether s, which time.ParseDuration refused, is a
// positive number and one unit, too long for a time.Duration.
func tooLong(s string) bool {
	for _, unit := range []string{"ns", "us", "µs", "μs", "ms", "s", "m", "h"} {
		if num, ok := strings.CutSuffix(s, unit); ok {
			f, err := strconv.ParseFloat(num, 64)
			return (err == nil || errors.Is(err, strconv.ErrRange)) && f > 0 && strings.Trim(num, "0123456789.") == ""
		}
	}
	return false
}

// quoteShort quotes s for an error message, cut to its first 64 bytes
// when it is longer (a few bytes fewer where that would split a rune).
func quoteShort(s string) string {
	const most = 64
	if len(s) <= most {
		return strconv.Quote(s)
	}
	cut := most
	for cut > most-(utf8.UTFMax-1) && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + fmt.Sprintf("... (%d bytes)", len(s))
}
