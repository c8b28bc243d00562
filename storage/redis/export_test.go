package redis

// MaxInFlight is maxInFlight, for the tests of pipelining.
const MaxInFlight = maxInFlight

// Queued returns how many calls of s wait for the next round trip.
func Queued(s *Store) int {
	s.calls.mu.Lock()
	defer s.calls.mu.Unlock()
	return len(s.calls.queue)
}
