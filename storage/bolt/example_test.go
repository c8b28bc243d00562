package bolt_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/bbolt"

	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/storage/bolt"
)

// Limits kept in a file survive a restart of the process.
func ExampleOpen() {
	dir, err := os.MkdirTemp("", "sluice-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "limits.db")
	buckets := []limiter.Bucket{{Capacity: 3, Period: time.Hour}}
	ctx := context.Background()

	s, err := bolt.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	lim, err := limiter.New(s, buckets)
	if err != nil {
		log.Fatal(err)
	}
	for range 2 {
		d, err := lim.Allow(ctx, "user:42")
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("allowed:", d.Allowed, "remaining:", d.Remaining)
	}
	if err := s.Close(); err != nil {
		log.Fatal(err)
	}

	// After a restart, the same file holds the same counts.
	s, err = bolt.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	lim, err = limiter.New(s, buckets)
	if err != nil {
		log.Fatal(err)
	}
	d, err := lim.Peek(ctx, "user:42")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("after restart, remaining:", d.Remaining)
	// Output:
	// allowed: true remaining: 2
	// allowed: true remaining: 1
	// after restart, remaining: 1
}

// A database the application opened itself can hold the limits in a
// bucket of their own; Close leaves the database open.
func ExampleNew() {
	dir, err := os.MkdirTemp("", "sluice-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// Always give bbolt a lock timeout: without one it waits forever for
	// a file another process holds.
	db, err := bbolt.Open(filepath.Join(dir, "app.db"), 0o600, &bbolt.Options{Timeout: 3 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	s, err := bolt.New(db, bolt.WithBucket("rate-limits"))
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	lim, err := limiter.New(s, []limiter.Bucket{{Capacity: 1, Period: time.Minute}})
	if err != nil {
		log.Fatal(err)
	}
	for range 2 {
		d, err := lim.Allow(context.Background(), "10.0.0.1")
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("allowed:", d.Allowed)
	}
	// Output:
	// allowed: true
	// allowed: false
}

// A file that is already open elsewhere cannot be opened again: Open gives
// up after the open timeout with ErrLocked.
func ExampleWithOpenTimeout() {
	dir, err := os.MkdirTemp("", "sluice-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "limits.db")

	s, err := bolt.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	_, err = bolt.Open(path, bolt.WithOpenTimeout(100*time.Millisecond))
	fmt.Println("locked:", errors.Is(err, bolt.ErrLocked))
	// Output:
	// locked: true
}
