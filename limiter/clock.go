package limiter

import "time"

// Clock is the source of time for a Limiter. The default is the system
// clock; tests pass a manual one with WithClock.
//
// A Clock that also has a method After(d time.Duration) <-chan time.Time
// (as a manual test clock usually does) is used by Wait for its sleeps, so
// that tests of Wait need no real time. Otherwise Wait sleeps on real
// timers, and with a clock given to WithClock for at most 50ms at a time
// before it reads the clock again, so that a manual clock that a test
// advances wakes it.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
}

// waitPoll is the longest real time Wait sleeps at once on a clock given
// to WithClock that has no After method.
const waitPoll = 50 * time.Millisecond

// sleeper is the optional part of a Clock that Wait sleeps on.
type sleeper interface {
	After(d time.Duration) <-chan time.Time
}

// funcClock is a Clock that calls a function, as WithClock(time.Now) gives.
type funcClock func() time.Time

func (f funcClock) Now() time.Time { return f() }

// systemClock reads the system's clock.
type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// after returns a channel that receives once d has passed on l's clock,
// or sooner (see waitPoll): Wait then reads the clock again.
func (l *Limiter) after(d time.Duration) (<-chan time.Time, func()) {
	if s, ok := l.clock.(sleeper); ok {
		return s.After(d), func() {}
	}
	if l.ownClock {
		d = min(d, waitPoll) // the clock may not follow real time
	}
	t := time.NewTimer(d)
	return t.C, func() { t.Stop() }
}
