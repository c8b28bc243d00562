package memory

// Shards returns the number of shards of s, for tests of WithShards.
func Shards(s *Store) int { return len(s.shards) }
