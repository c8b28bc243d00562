package bench

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/postgres"
)

const defaultPostgresURL = "postgres://root@127.0.0.1:5432/test?sslmode=disable"

// postgresConns is the size of the one pool every PostgreSQL contender
// uses: enough for 16 statements in flight, well below the server's
// connection limit on a shared server.
const postgresConns = 16

// BenchmarkPostgresLogged compares sluice on a logged PostgreSQL table with
// the floor: one INSERT ... ON CONFLICT DO UPDATE ... RETURNING per
// decision on a logged table.
func BenchmarkPostgresLogged(b *testing.B) { benchmarkPostgres(b, false) }

// BenchmarkPostgresUnlogged is BenchmarkPostgresLogged with UNLOGGED
// tables.
func BenchmarkPostgresUnlogged(b *testing.B) { benchmarkPostgres(b, true) }

func benchmarkPostgres(b *testing.B, unlogged bool) {
	url := os.Getenv("SLUICE_POSTGRES_URL")
	if url == "" {
		url = defaultPostgresURL
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		b.Fatalf("SLUICE_POSTGRES_URL: %v", err)
	}
	cfg.MaxConns = postgresConns
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		if pool != nil {
			pool.Close()
		}
		skipUnavailable(b, "PostgreSQL", url, "SLUICE_POSTGRES_URL", err)
	}
	b.Cleanup(pool.Close)
	// Tables are dropped when the benchmark ends, after the stores over
	// them are closed (case cleanups run first).
	dropTable := func(e *env, table string) {
		e.cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := pool.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{table}.Sanitize()); err != nil {
				b.Logf("PostgreSQL: dropping table %s: %v", table, err)
			}
		})
	}
	e := newEnv(b)
	runCases(b, e, networkCases, []contender{
		sluiceContender("sluice", func(e *env, ns string) (storage.Store, error) {
			dropTable(e, ns)
			opts := []postgres.Option{postgres.WithTable(ns)}
			if unlogged {
				opts = append(opts, postgres.WithUnlogged())
			}
			s, err := postgres.New(context.Background(), pool, opts...)
			if err != nil {
				return nil, err
			}
			e.cleanup(func() { s.Close() })
			return &countingStore{Store: s}, nil
		}),
		{name: "floor-upsert", floor: true, setup: func(e *env, ns string, _ limit) (decideFunc, func() int64, error) {
			table := pgx.Identifier{ns}.Sanitize()
			kind := "TABLE"
			if unlogged {
				kind = "UNLOGGED TABLE"
			}
			dropTable(e, ns)
			if _, err := pool.Exec(context.Background(), fmt.Sprintf(
				"CREATE %s %s (key bytea PRIMARY KEY, value bytea NOT NULL, version bigint NOT NULL)", kind, table)); err != nil {
				return nil, nil, err
			}
			upsert := fmt.Sprintf(`INSERT INTO %[1]s AS r (key, value, version) VALUES ($1, $2, 1)
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = r.version + 1
RETURNING r.version`, table)
			var calls atomic.Int64
			return func(ctx context.Context, key string) (bool, error) {
				calls.Add(1)
				var version int64
				return true, pool.QueryRow(ctx, upsert, []byte(key), floorValue).Scan(&version)
			}, calls.Load, nil
		}},
	})
}
