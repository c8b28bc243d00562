package redis_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/sluice-go/sluice/conformance"
	"github.com/sluice-go/sluice/internal/testbackend"
	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/redis"
)

func TestMain(m *testing.M) { testbackend.Main(m) }

// newStore is the factory for the Redis server of testbackend: each test
// gets its own key prefix, whose keys are deleted when it ends.
func newStore(tb testing.TB) storage.Store {
	opt, err := goredis.ParseURL(testbackend.RedisURL(tb))
	if err != nil {
		tb.Fatalf("parse redis URL: %v", err)
	}
	opt.ContextTimeoutEnabled = true
	return openStore(tb, goredis.NewClient(opt), testPrefix(tb))
}

// newMiniStore returns a factory over miniredis, one server per test.
// miniredis runs the same scripts through gopher-lua; with ClockTTL its
// keys expire by the wall clock, as Redis does.
func newMiniStore() conformance.NewStore {
	var (
		mu      sync.Mutex
		servers = map[testing.TB]*miniredis.Miniredis{}
	)
	return func(tb testing.TB) storage.Store {
		// miniredis builds a new Lua interpreter for every script call
		// (about 0.3 ms here), and ConcurrentIncrements makes some 200,000
		// contended calls: over a minute. It runs against real Redis and
		// the cluster instead.
		if strings.HasSuffix(tb.Name(), "/ConcurrentIncrements") {
			tb.Skip("miniredis: too slow for this check (a Lua interpreter per script call)")
		}
		mu.Lock()
		m, ok := servers[tb]
		if !ok {
			m = miniredis.NewMiniRedis()
			m.ClockTTL(true)
			if err := m.Start(); err != nil {
				mu.Unlock()
				tb.Fatalf("miniredis: %v", err)
			}
			servers[tb] = m
			tb.Cleanup(func() {
				m.Close()
				mu.Lock()
				delete(servers, tb)
				mu.Unlock()
			})
		}
		mu.Unlock()
		client := goredis.NewClient(&goredis.Options{Addr: m.Addr(), ContextTimeoutEnabled: true})
		return openStore(tb, client, "sluice:")
	}
}

func TestConformance(t *testing.T) {
	t.Run("Redis", func(t *testing.T) {
		conformance.RunStore(t, newStore)
		conformance.RunLimiter(t, newStore)
	})
	t.Run("Miniredis", func(t *testing.T) {
		conformance.RunStore(t, newMiniStore())
		conformance.RunLimiter(t, newMiniStore())
	})
}

func BenchmarkLimiter(b *testing.B) {
	conformance.RunBenchmarks(b, newStore)
}

// Below: what is special to the Redis driver.

// testPrefix returns the key prefix of tb on a shared server.
func testPrefix(tb testing.TB) string {
	return "sluicetest:" + testbackend.Namespace(tb) + ":"
}

// openStore returns a store over client with prefix; when tb ends it
// deletes the keys under prefix and closes the client.
func openStore(tb testing.TB, client goredis.UniversalClient, prefix string) *redis.Store {
	tb.Helper()
	s, err := redis.New(client, redis.WithPrefix(prefix))
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() {
		s.Close()
		deletePrefix(tb, client, prefix)
		client.Close()
	})
	return s
}

// deletePrefix deletes the keys under prefix with SCAN and DEL, on every
// master of a cluster.
func deletePrefix(tb testing.TB, client goredis.UniversalClient, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	clean := func(ctx context.Context, c *goredis.Client) error {
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			if err := c.Del(ctx, iter.Val()).Err(); err != nil {
				return err
			}
		}
		return iter.Err()
	}
	var err error
	switch c := client.(type) {
	case *goredis.Client:
		err = clean(ctx, c)
	case *goredis.ClusterClient:
		err = c.ForEachMaster(ctx, clean)
	case *goredis.Ring:
		err = c.ForEachShard(ctx, clean)
	}
	if err != nil && !errors.Is(err, goredis.ErrClosed) {
		tb.Logf("cleanup of %q: %v", prefix, err)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	client := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1"})
	defer client.Close()
	for _, tc := range []struct {
		name   string
		client goredis.UniversalClient
		prefix string
		want   string
	}{
		{"nil client", nil, "x:", "nil client"},
		{"hash tag", client, "{rl}:", "brace"},
		{"open brace", client, "rl{", "brace"},
		{"close brace", client, "}rl", "brace"},
		{"NUL", client, "a\x00b", "NUL"},
		{"too long", client, strings.Repeat("p", 257), "more than 256"},
	} {
		s, err := redis.New(tc.client, redis.WithPrefix(tc.prefix))
		if err == nil || s != nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "redis: ") {
			t.Errorf("%s: New(WithPrefix(%q)) = %v, %v; want nil and an error saying %q", tc.name, tc.prefix, s, err, tc.want)
		}
	}
	for _, p := range []string{"", "a", "app:rl:", strings.Repeat("p", 256), "ключ:"} {
		if _, err := redis.New(client, redis.WithPrefix(p)); err != nil {
			t.Errorf("New(WithPrefix(%q)): %v, want nil", p, err)
		}
	}
	if _, err := redis.New(client); err != nil {
		t.Errorf("New without options: %v", err)
	}
}
