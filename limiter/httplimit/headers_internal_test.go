package httplimit

import (
	"testing"
	"time"
)

// Retry-After is whole seconds rounded up and never 0, whatever wait it is
// given, so that no client is told to retry at once or early.
func TestRetryAfter(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "1"},
		{0, "1"},
		{time.Nanosecond, "1"},
		{time.Second, "1"},
		{time.Second + time.Nanosecond, "2"},
		{90 * time.Second, "90"},
	} {
		if got := retryAfter(c.d); got != c.want {
			t.Errorf("retryAfter(%v) = %q, want %q", c.d, got, c.want)
		}
	}
}
