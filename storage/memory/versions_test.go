package memory

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Goroutines create and delete one key over and over; every successful
// write must get a version that no other write of that key got (package
// storage: a key's versions strictly grow with every write, also across
// Delete and expiry). This failed when a new entry took its first version
// when it was made rather than when it was first locked: an entry of the
// same key made, written and removed in between was not counted.
func TestVersionsNeverRepeatUnderDeletes(t *testing.T) {
	s := New()
	defer s.Close()
	ctx := context.Background()
	const workers = 4
	deadline := time.Now().Add(time.Second)
	var mu sync.Mutex
	seen := map[uint64]int{}
	dups, writes := 0, 0
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				rec, ok, err := s.CompareAndSwap(ctx, "k", 0, []byte{byte(w)}, time.Hour)
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					mu.Lock()
					writes++
					if seen[rec.Version]++; seen[rec.Version] == 2 {
						dups++
					}
					mu.Unlock()
				}
				if err := s.Delete(ctx, "k"); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if dups > 0 {
		t.Fatalf("%d versions were given to more than one write of key %q (%d writes)", dups, "k", writes)
	}
}
