package limiter_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/storage/memory"
)

// Five requests per ten seconds for one user: the first five pass, then
// the user is told to come back in two seconds.
func Example() {
	store := memory.New()
	defer store.Close()

	lim, err := limiter.New(store, []limiter.Bucket{{Capacity: 5, Period: 10 * time.Second}})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	for range 7 {
		d, err := lim.Allow(ctx, "user:42")
		if err != nil {
			log.Fatal(err) // the store failed: decide yourself whether to serve
		}
		if d.Allowed {
			fmt.Printf("allowed, %d left\n", d.Remaining)
		} else {
			fmt.Printf("denied, retry in %v\n", d.RetryAfter.Round(time.Second))
		}
	}
	// Output:
	// allowed, 4 left
	// allowed, 3 left
	// allowed, 2 left
	// allowed, 1 left
	// allowed, 0 left
	// denied, retry in 2s
	// denied, retry in 2s
}

// Several buckets combine: a burst of 3, at most 10 an hour. The binding
// bucket, the one closest to running out, is what the Decision reports.
func ExampleNew_multipleBuckets() {
	store := memory.New()
	defer store.Close()

	lim, err := limiter.New(store, []limiter.Bucket{
		{Capacity: 3, Period: time.Minute},
		{Capacity: 10, Period: time.Hour},
	}, limiter.WithName("login"))
	if err != nil {
		log.Fatal(err)
	}
	d, err := lim.AllowN(context.Background(), "alice", 3)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(d.Allowed, d.Limit, d.Remaining)
	// Output: true 3 0
}

// Wait suits jobs that should slow down rather than fail.
func ExampleLimiter_Wait() {
	store := memory.New()
	defer store.Close()

	lim, err := limiter.New(store, []limiter.Bucket{{Capacity: 1, Period: 20 * time.Millisecond}})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	for range 3 {
		if err := lim.Wait(ctx, "job"); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println(time.Since(start) >= 40*time.Millisecond)
	// Output: true
}

// Peek reads a key without taking a token; Reset fills it again, say
// after a successful login.
func ExampleLimiter_Reset() {
	store := memory.New()
	defer store.Close()

	lim, err := limiter.New(store, []limiter.Bucket{{Capacity: 3, Period: time.Hour}})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if _, err := lim.AllowN(ctx, "bob", 2); err != nil {
		log.Fatal(err)
	}
	d, err := lim.Peek(ctx, "bob")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("before reset:", d.Remaining)
	if err := lim.Reset(ctx, "bob"); err != nil {
		log.Fatal(err)
	}
	if d, err = lim.Peek(ctx, "bob"); err != nil {
		log.Fatal(err)
	}
	fmt.Println("after reset:", d.Remaining)
	// Output:
	// before reset: 1
	// after reset: 3
}
