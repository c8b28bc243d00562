package memory_test

import (
	"context"
	"fmt"
	"time"

	"github.com/sluice-go/sluice/storage/memory"
)

// The store used directly, as the limiter uses it: insert with expected
// version 0, then swap from the version read; a stale version conflicts
// and returns the current record, so a retry needs no Get.
func Example() {
	store := memory.New()
	defer store.Close()
	ctx := context.Background()

	first, swapped, err := store.CompareAndSwap(ctx, "k", 0, []byte("one"), time.Minute)
	fmt.Println(string(first.Value), swapped, err)

	second, swapped, _ := store.CompareAndSwap(ctx, "k", first.Version, []byte("two"), time.Minute)
	fmt.Println(string(second.Value), swapped, second.Version > first.Version)

	current, swapped, _ := store.CompareAndSwap(ctx, "k", first.Version, []byte("three"), time.Minute)
	fmt.Println(string(current.Value), swapped, current.Version == second.Version)

	rec, _ := store.Get(ctx, "absent")
	fmt.Println(rec.Version)
	// Output:
	// one true <nil>
	// two true true
	// two false true
	// 0
}

// New with an option: a slower janitor for a store whose records mostly
// live long.
func ExampleNew() {
	store := memory.New(memory.WithSweepInterval(10 * time.Second))
	defer store.Close()
	ctx := context.Background()
	for _, key := range []string{"a", "b", "c"} {
		store.CompareAndSwap(ctx, key, 0, []byte("v"), time.Hour)
	}
	store.Delete(ctx, "b")
	fmt.Println(store.Len())
	// Output:
	// 2
}
