package redis_test

import (
	"context"
	"fmt"
	"log"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/storage/redis"
)

// A limiter shared by every process that uses the same Redis server and
// prefix. It needs a server, so it only compiles here.
func ExampleNew() {
	client := goredis.NewClient(&goredis.Options{
		Addr: "127.0.0.1:6379",
		// Let each call's context bound its network waits.
		ContextTimeoutEnabled: true,
	})
	defer client.Close() // the store never closes the client

	store, err := redis.New(client, redis.WithPrefix("myapp:ratelimit:"))
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	lim, err := limiter.New(store, []limiter.Bucket{{Capacity: 5, Period: 10 * time.Second}}, limiter.WithName("login"))
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	d, err := lim.Allow(ctx, "user:42")
	if err != nil {
		log.Fatal(err) // the store failed: the caller decides to fail open or closed
	}
	fmt.Println(d.Allowed, d.Remaining)
}

// A Redis Cluster works the same way: every call touches one key, so it
// lives in one hash slot.
func ExampleNew_cluster() {
	client := goredis.NewClusterClient(&goredis.ClusterOptions{
		Addrs:                 []string{"127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"},
		ContextTimeoutEnabled: true,
	})
	defer client.Close()

	store, err := redis.New(client)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	lim, err := limiter.New(store, []limiter.Bucket{{Capacity: 100, Period: time.Minute}})
	if err != nil {
		log.Fatal(err)
	}
	d, err := lim.Allow(context.Background(), "api:client-7")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(d.Allowed)
}
