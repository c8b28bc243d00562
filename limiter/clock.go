package limiter

import "time"

// Clock is the source of time for a Limiter. The default is the system
// clock; tests pass a manual one with WithClock.
//
// A Clock that also has a method After(d time.Duration) <-chan time.Time
// (as a manual test clock usually does) is used by Wait for its sleeps, so
// that tests of Wait need no real time; otherwise Wait sleeps on real
// timers.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
}

// sleeper is the optional part of a Clock that Wait sleeps on.
type sleeper interface {
	After(d time.Duration) <-chan time.Time
}

// systemClock reads the system's clock.
type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// after returns a channel that receives once d has passed on l's clock.
func (l *Limiter) after(d time.Duration) (<-chan time.Time, func()) {
	if s, ok := l.clock.(sleeper); ok {
		return s.After(d), func() {}
	}
	t := time.NewTimer(d)
	return t.C, func() { t.Stop() }
}
