package memory

import "time"

// SweepInterval returns the janitor's interval, for tests of
// WithSweepInterval.
func SweepInterval(s *Store) time.Duration { return s.jan.every }
