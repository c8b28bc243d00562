//go:build !race

package memory_test

// raceEnabled reports whether the race detector is on; it slows the
// store tenfold, so the largest tests shrink under it.
const raceEnabled = false
