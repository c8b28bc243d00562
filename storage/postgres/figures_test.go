package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluice-go/sluice/internal/testbackend"
	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/storage/postgres"
)

// figureKeys is the spread of the "keys" benchmarks.
const figureKeys = 10_000

// BenchmarkFigures compares the limiter on this driver with the floor the
// database sets: a bare single-row INSERT ... ON CONFLICT DO UPDATE ...
// RETURNING on the same kind of table, through the same pool of 16
// connections with durable commits (PostgreSQL's defaults), at 1, 16 and
// 64 goroutines, on one hot key and over 10,000 keys, logged and UNLOGGED.
// For the spread of keys, "store" is the driver alone: CompareAndSwap
// from the last version seen, as the limiter sends it. Each reports
// decisions (or statements) per second. Run it briefly:
//
//	go test -run '^$' -bench Figures -benchtime 1s ./storage/postgres/
func BenchmarkFigures(b *testing.B) {
	url := testbackend.PostgresURL(b)
	keys := make([]string, figureKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("user:%d", i)
	}
	spreads := []struct {
		name string
		key  func(i int64) string
	}{
		{"hot", func(int64) string { return "hot" }},
		{"keys10000", func(i int64) string { return keys[(i*7919)%figureKeys] }},
	}
	for _, unlogged := range []bool{false, true} {
		table := "logged"
		var opts []postgres.Option
		if unlogged {
			table, opts = "unlogged", []postgres.Option{postgres.WithUnlogged()}
		}
		for _, spread := range spreads {
			for _, g := range []int{1, 16, 64} {
				name := fmt.Sprintf("%s/%s/goroutines=%d", table, spread.name, g)
				b.Run(name+"/floor", func(b *testing.B) {
					pool := figurePool(b, url, opts)
					upsert := `INSERT INTO ` + pgx.Identifier{testbackend.Namespace(b)}.Sanitize() + ` AS r (key, value, expires_at)
						VALUES ($1, $2, clock_timestamp() + interval '1 hour')
						ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = DEFAULT, expires_at = EXCLUDED.expires_at
						RETURNING r.version`
					value := make([]byte, 24) // about the size of a limiter record
					runFigure(b, g, func(ctx context.Context, i int64) error {
						var v int64
						return pool.QueryRow(ctx, upsert, []byte(spread.key(i)), value).Scan(&v)
					})
				})
				if spread.name != "hot" {
					// The driver alone: CompareAndSwap from the last version
					// seen, the statement the limiter sends per decision.
					b.Run(name+"/store", func(b *testing.B) {
						s := storeOn(b, figurePool(b, url, opts), opts...)
						versions := make([]atomic.Uint64, figureKeys)
						value := make([]byte, 24)
						runFigure(b, g, func(ctx context.Context, i int64) error {
							k := (i * 7919) % figureKeys
							rec, _, err := s.CompareAndSwap(ctx, keys[k], versions[k].Load(), value, time.Hour)
							versions[k].Store(rec.Version)
							return err
						})
					})
				}
				b.Run(name+"/limiter", func(b *testing.B) {
					pool := figurePool(b, url, opts)
					lim, err := limiter.New(storeOn(b, pool, opts...), []limiter.Bucket{{Capacity: limiter.MaxCapacity, Period: time.Second}})
					if err != nil {
						b.Fatal(err)
					}
					runFigure(b, g, func(ctx context.Context, i int64) error {
						d, err := lim.Allow(ctx, spread.key(i))
						if err == nil && !d.Allowed {
							err = fmt.Errorf("denied: %+v", d)
						}
						return err
					})
				})
			}
		}
	}
}

// figurePool returns a pool of 16 connections with durable commits over a
// table of b's own, made afresh by New with opts (a benchmark function
// runs several times with the same b) and dropped when b ends.
func figurePool(b *testing.B, url string, opts []postgres.Option) *pgxpool.Pool {
	b.Helper()
	table := testbackend.Namespace(b)
	dropTable(b, url, table)
	b.Cleanup(func() { dropTable(b, url, table) })
	pool := newPoolWith(b, url, 16, true)
	storeOn(b, pool, opts...)
	return pool
}

// runFigure calls op b.N times in all from g goroutines and reports the
// calls per second.
func runFigure(b *testing.B, g int, op func(ctx context.Context, i int64) error) {
	ctx := context.Background()
	var (
		next   atomic.Int64
		failed atomic.Value
		wg     sync.WaitGroup
	)
	b.ResetTimer()
	for range g {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				if err := op(ctx, i); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}
