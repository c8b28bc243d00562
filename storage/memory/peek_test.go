package memory_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/storage/memory"
)

// Peek only reads: on the memory store it holds the key, and a key held
// but not written must leave no entry behind.
func TestPeekLeavesNoEntries(t *testing.T) {
	s := memory.New(memory.WithSweepInterval(time.Hour))
	defer s.Close()
	l, err := limiter.New(s, []limiter.Bucket{{Capacity: 5, Period: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		if _, err := l.Peek(context.Background(), fmt.Sprint("k", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Len(); n != 0 {
		t.Errorf("after 1000 Peeks of absent keys and no write, Len() = %d, want 0", n)
	}
}
