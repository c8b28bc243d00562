// Command quickstart shows sluice at work: one user, five requests per ten
// seconds, seven quick calls.
//
//	go run ./examples/quickstart
package main

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/storage/memory"
)

func main() {
	store := memory.New()
	defer store.Close()

	lim, err := limiter.New(store, []limiter.Bucket{{Capacity: 5, Period: 10 * time.Second}})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	for i := 1; i <= 7; i++ {
		d, err := lim.Allow(ctx, "user:42")
		if err != nil {
			log.Fatal(err)
		}
		if d.Allowed {
			fmt.Printf("call %d: allowed, %d of %d left\n", i, d.Remaining, d.Limit)
		} else {
			fmt.Printf("call %d: denied, %d of %d left, retry after %v\n", i, d.Remaining, d.Limit, d.RetryAfter.Round(time.Second))
		}
	}
}
