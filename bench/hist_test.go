package bench

import (
	"math/bits"
	"testing"
	"time"
)

// subBits is how many bits below the leading one a histogram bucket keeps:
// 32 buckets per power of two, so a recorded latency is off by at most
// 1/32 (about 3%).
const subBits = 5

const (
	linearBuckets = 2 << subBits                            // values below this are exact
	histBuckets   = linearBuckets + (64-subBits-1)<<subBits // enough for any uint64
)

// histogram counts latencies in log-linear buckets. One goroutine records
// into it; merge combines them afterwards. It never allocates.
type histogram struct {
	counts [histBuckets]uint64
	n      uint64
}

func bucketOf(v uint64) int {
	if v < linearBuckets {
		return int(v)
	}
	shift := bits.Len64(v) - subBits - 1
	return linearBuckets + (shift-1)<<subBits + int(v>>shift) - 1<<subBits
}

// bucketMid returns the middle of the values that fall into bucket i.
func bucketMid(i int) uint64 {
	if i < linearBuckets {
		return uint64(i)
	}
	shift := (i-linearBuckets)>>subBits + 1
	low := uint64((i-linearBuckets)&(1<<subBits-1)+1<<subBits) << shift
	return low + (uint64(1)<<shift)/2
}

func (h *histogram) record(d time.Duration) {
	h.counts[bucketOf(uint64(max(d, 0)))]++
	h.n++
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the latency below or at which a fraction q of the
// recorded ones lie (to the bucket's precision), or 0 when none was
// recorded.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(bucketMid(i))
		}
	}
	return time.Duration(bucketMid(histBuckets - 1))
}

func TestHistogramBuckets(t *testing.T) {
	prev := -1
	for _, v := range []uint64{0, 1, 63, 64, 65, 127, 128, 1000, 1 << 20, 1<<40 + 12345, 1<<63 - 1, 1<<64 - 1} {
		i := bucketOf(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("bucketOf(%d) = %d, outside [0, %d)", v, i, histBuckets)
		}
		if i < prev {
			t.Errorf("bucketOf(%d) = %d, below the bucket of a smaller value (%d)", v, i, prev)
		}
		prev = i
		mid := bucketMid(i)
		if v < linearBuckets && mid != v {
			t.Errorf("bucketMid(bucketOf(%d)) = %d, want it exact", v, mid)
		}
		if v >= linearBuckets {
			if diff := float64(max(mid, v)-min(mid, v)) / float64(v); diff > 1.0/(1<<subBits) {
				t.Errorf("bucketMid(bucketOf(%d)) = %d, off by %.3f", v, mid, diff)
			}
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var a, b histogram
	for i := 1; i <= 99; i++ {
		a.record(time.Duration(i) * time.Microsecond)
	}
	b.record(time.Second)
	a.merge(&b)
	if a.n != 100 {
		t.Fatalf("n = %d after merge, want 100", a.n)
	}
	near := func(got, want time.Duration) bool {
		return got >= want-want/32 && got <= want+want/32
	}
	if got, want := a.quantile(0.5), 50*time.Microsecond; !near(got, want) {
		t.Errorf("p50 = %v, want %v within 3%%", got, want)
	}
	if got, want := a.quantile(0.99), 99*time.Microsecond; !near(got, want) {
		t.Errorf("p99 = %v, want %v within 3%%", got, want)
	}
	if got, want := a.quantile(1), time.Second; !near(got, want) {
		t.Errorf("p100 = %v, want %v within 3%%", got, want)
	}
	var empty histogram
	if got := empty.quantile(0.5); got != 0 {
		t.Errorf("p50 of nothing = %v, want 0", got)
	}
	if got, want := bucketOf(0), 0; got != want {
		t.Errorf("bucketOf(0) = %d, want %d", got, want)
	}
	empty.record(-time.Second) // a clock step: counted as 0
	if got := empty.quantile(0.5); got != 0 {
		t.Errorf("p50 of a negative latency = %v, want 0", got)
	}
}
