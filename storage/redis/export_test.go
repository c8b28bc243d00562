package redis

// MaxInFlight and MaxBatch are maxInFlight and maxBatch, for the tests of
// pipelining.
const (
	MaxInFlight = maxInFlight
	MaxBatch    = maxBatch
)

// Queued returns how many calls of s wait for the next round trip.
func Queued(s *Store) int { return s.calls.Queued() }
