package limiter

import (
	"fmt"
	"strconv"
	"time"
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
	if b.Capacity < 1 || b.Capacity > MaxCapacity {
		return fmt.Errorf("%w %v: capacity must be between 1 and %d", ErrInvalidBucket, b, int64(MaxCapacity))
	}
	if b.Period < 1 || b.Period > MaxPeriod {
		return fmt.Errorf("%w %v: period must be between 1ns and %v", ErrInvalidBucket, b, MaxPeriod)
	}
	return nil
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
