package memory

import "time"

// Shards returns the number of shards of s, for tests of WithShards.
func Shards(s *Store) int { return len(s.shards) }

// SweepInterval returns the janitor's interval, for tests of
// WithSweepInterval.
func SweepInterval(s *Store) time.Duration { return s.jan.every }
