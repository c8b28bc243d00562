package bench

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	goredis "github.com/redis/go-redis/v9"
	throttledredis "github.com/throttled/throttled/v2/store/goredisstore.v9"
	ululeredis "github.com/ulule/limiter/v3/drivers/store/redis"

	"github.com/sluice-go/sluice/storage"
	sluiceredis "github.com/sluice-go/sluice/storage/redis"
)

const defaultRedisURL = "redis://127.0.0.1:6379/0"

// BenchmarkRedis compares sluice on Redis with the Redis limiters and the
// floors: a bare PING, EVALSHA of a trivial script, and EVALSHA of a
// script that reads and rewrites its key (GETSET). Every contender has
// its own client, so its round trips can be counted.
func BenchmarkRedis(b *testing.B) {
	url := os.Getenv("SLUICE_REDIS_URL")
	if url == "" {
		url = defaultRedisURL
	}
	opts, err := goredis.ParseURL(url)
	if err != nil {
		b.Fatalf("SLUICE_REDIS_URL: %v", err)
	}
	probe := goredis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	err = probe.Ping(ctx).Err()
	cancel()
	probe.Close()
	if err != nil {
		skipUnavailable(b, "Redis", url, "SLUICE_REDIS_URL", err)
	}
	e := newEnv(b)
	b.Cleanup(func() { removeRedisKeys(b, opts) })
	c := func(name string, floor bool, setup func(client *goredis.Client, ns string, lim limit) (decideFunc, error)) contender {
		return contender{name: name, floor: floor, setup: func(e *env, ns string, lim limit) (decideFunc, func() int64, error) {
			client := goredis.NewClient(opts)
			e.cleanup(func() { client.Close() })
			hook := &countHook{}
			client.AddHook(hook)
			decide, err := setup(client, ns, lim)
			return decide, hook.n.Load, err
		}}
	}
	runCases(b, e, networkCases, []contender{
		c("sluice", false, func(client *goredis.Client, ns string, lim limit) (decideFunc, error) {
			d, _, err := sluiceContender("sluice", func(*env, string) (storage.Store, error) {
				return sluiceredis.New(client, sluiceredis.WithPrefix(ns+":"))
			}).setup(e, ns, lim)
			return d, err
		}),
		c("redis_rate", false, func(client *goredis.Client, ns string, lim limit) (decideFunc, error) {
			rl := redis_rate.NewLimiter(client)
			l := redis_rate.Limit{Rate: int(lim.tokens), Burst: int(lim.tokens), Period: lim.period}
			return func(ctx context.Context, key string) (bool, error) {
				res, err := rl.Allow(ctx, ns+":"+key, l)
				if err != nil {
					return false, err
				}
				return res.Allowed > 0, nil
			}, nil
		}),
		c("throttled", false, func(client *goredis.Client, ns string, lim limit) (decideFunc, error) {
			store, err := throttledredis.NewCtx(client, ns+":")
			if err != nil {
				return nil, err
			}
			d, _, err := throttledDecide(store, lim)
			return d, err
		}),
		c("ulule", false, func(client *goredis.Client, ns string, lim limit) (decideFunc, error) {
			store, err := ululeredis.NewStoreWithOptions(client, ululeStoreOptions(ns))
			if err != nil {
				return nil, err
			}
			return ululeDecide(store, lim), nil
		}),
		c("floor-PING", true, func(client *goredis.Client, _ string, _ limit) (decideFunc, error) {
			return func(ctx context.Context, _ string) (bool, error) {
				return true, client.Ping(ctx).Err()
			}, nil
		}),
		c("floor-EVALSHA", true, func(client *goredis.Client, ns string, _ limit) (decideFunc, error) {
			sha, err := client.ScriptLoad(context.Background(), trivialScript).Result()
			if err != nil {
				return nil, err
			}
			return func(ctx context.Context, key string) (bool, error) {
				return true, client.EvalSha(ctx, sha, []string{ns + ":" + key}).Err()
			}, nil
		}),
		c("floor-GETSET", true, func(client *goredis.Client, ns string, lim limit) (decideFunc, error) {
			sha, err := client.ScriptLoad(context.Background(), readWriteScript).Result()
			if err != nil {
				return nil, err
			}
			value := strings.Repeat("v", readWriteSize)
			// sluice keeps a record until its buckets are full again, plus a second.
			ttl := (lim.period/time.Duration(lim.tokens) + time.Second).Milliseconds()
			return func(ctx context.Context, key string) (bool, error) {
				return true, client.EvalSha(ctx, sha, []string{ns + ":" + key}, value, ttl).Err()
			}, nil
		}),
	})
}

// trivialScript is the EVALSHA floor: a script that touches nothing.
const trivialScript = "return 1"

// readWriteScript is the GETSET floor: a script that reads its key and
// writes it back with a time to live, and decides nothing. It is the least
// a limiter pays the server per decision when it keeps a key's state in
// one Redis key that it reads and rewrites; the EVALSHA floor writes
// nothing.
const readWriteScript = "redis.call('GET', KEYS[1]) redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1"

// readWriteSize is the length of the value the GETSET floor writes: that
// of sluice's record of one bucket in Redis (a tag, an 8-byte version and
// the limiter's 29-byte state).
const readWriteSize = 38

// countHook counts what a go-redis client sends: each command and each
// pipeline is one round trip.
type countHook struct{ n atomic.Int64 }

func (h *countHook) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (h *countHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *countHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// removeRedisKeys deletes every key this run made (they all hold runID),
// and nothing else.
func removeRedisKeys(b *testing.B, opts *goredis.Options) {
	client := goredis.NewClient(opts)
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	iter := client.Scan(ctx, 0, "*"+runID+"*", 1000).Iterator()
	var batch []string
	flush := func() {
		if len(batch) > 0 {
			if err := client.Unlink(ctx, batch...).Err(); err != nil && !errors.Is(err, goredis.Nil) {
				b.Logf("Redis: removing this run's keys: %v", err)
			}
			batch = batch[:0]
		}
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 1000 {
			flush()
		}
	}
	flush()
	if err := iter.Err(); err != nil {
		b.Logf("Redis: listing this run's keys: %v", err)
	}
}
