package redis_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/sluice-go/sluice/conformance"
	"github.com/sluice-go/sluice/internal/fakeclock"
	"github.com/sluice-go/sluice/internal/testbackend"
	"github.com/sluice-go/sluice/limiter"
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
		// miniredis, running in the test binary, reads PX into an int: on
		// a 32-bit platform a ten-year time to live is out of its range
		// (a Redis server is not). Real Redis runs the check there too.
		if strings.HasSuffix(tb.Name(), "/RecordsLiveTheirTTL") && strconv.IntSize == 32 {
			tb.Skip("miniredis: a ten-year PX overflows its int on a 32-bit platform")
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
		{"nil *Client", (*goredis.Client)(nil), "x:", "nil client"},
		{"nil *ClusterClient", (*goredis.ClusterClient)(nil), "x:", "nil client"},
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
	if _, err := redis.New(client, nil, redis.WithPrefix("p:")); err != nil {
		t.Errorf("New with a nil option: %v, want it ignored", err)
	}
}

// ownServer starts a redis-server for t alone and returns a store over it
// and another client of it, for inspection.
func ownServer(t *testing.T) (*redis.Store, *goredis.Client) {
	t.Helper()
	srv := testbackend.StartRedis(t)
	s, err := redis.New(ownClient(t, srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	return s, ownClient(t, srv.Addr())
}

// ownClient returns a client of the server at addr, closed when t ends.
func ownClient(t *testing.T, addr string) *goredis.Client {
	c := goredis.NewClient(&goredis.Options{Addr: addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCluster(t *testing.T) {
	addrs := startCluster(t)
	newClusterStore := func(tb testing.TB) storage.Store {
		client := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: addrs, ContextTimeoutEnabled: true})
		return openStore(tb, client, testPrefix(tb))
	}
	conformance.RunStore(t, newClusterStore)
	conformance.RunLimiter(t, newClusterStore)

	t.Run("Pipelined", func(t *testing.T) {
		testPipelinedCalls(t, goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: addrs, ContextTimeoutEnabled: true}))
	})

	t.Run("KeysSpreadOverMasters", func(t *testing.T) {
		ctx := t.Context()
		client := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: addrs, ContextTimeoutEnabled: true})
		prefix := testPrefix(t)
		s := openStore(t, client, prefix)
		const n = 60
		for i := range n {
			if _, _, err := s.CompareAndSwap(ctx, fmt.Sprintf("user:%d", i), 0, []byte("v"), time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		var (
			mu     sync.Mutex
			counts = map[string]int{}
		)
		err := client.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
			keys, err := c.Keys(ctx, prefix+"*").Result()
			mu.Lock()
			counts[c.Options().Addr] = len(keys)
			mu.Unlock()
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		for _, addr := range addrs {
			if counts[addr] == 0 {
				t.Errorf("master %s holds none of the %d keys: %v", addr, n, counts)
			}
			total += counts[addr]
		}
		if total != n {
			t.Errorf("masters hold %d keys in all, want %d: %v", total, n, counts)
		}
		// Keys that share a hash tag share a slot, as Redis hashes them.
		a, errA := client.ClusterKeySlot(ctx, prefix+"{acct:7}:login").Result()
		b, errB := client.ClusterKeySlot(ctx, prefix+"{acct:7}:api").Result()
		if errA != nil || errB != nil || a != b {
			t.Errorf("slots of two keys tagged {acct:7}: %d, %d (%v, %v); want one slot", a, b, errA, errB)
		}
	})
}

func TestRing(t *testing.T) {
	addrs := map[string]string{"a": testbackend.StartRedis(t).Addr(), "b": testbackend.StartRedis(t).Addr()}
	newRingStore := func(tb testing.TB) storage.Store {
		ring := goredis.NewRing(&goredis.RingOptions{Addrs: addrs, ContextTimeoutEnabled: true})
		return openStore(tb, ring, testPrefix(tb))
	}
	conformance.RunStore(t, newRingStore)
	conformance.RunLimiter(t, newRingStore)
}

// A value under one of our keys that sluice did not write is an error
// wrapping storage.ErrCorrupt, and nothing overwrites or deletes it.
func TestForeignValueLeftAlone(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	raw, err := goredis.ParseURL(testbackend.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	direct := goredis.NewClient(raw)
	defer direct.Close()
	prefix := testPrefix(t)
	for key, value := range map[string]string{
		"text":           "hello",
		"number":         "42",
		"empty":          "",
		"short header":   "\xF8\x00\x00",
		"version zero":   "\xF8\x00\x00\x00\x00\x00\x00\x00\x00value",
		"long tombstone": "\xF9\x00\x00\x00\x00\x00\x00\x00\x01x",
	} {
		if err := direct.Set(ctx, prefix+key, value, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := direct.HSet(ctx, prefix+"hash", "f", "v").Err(); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"text", "number", "empty", "short header", "version zero", "long tombstone", "hash"} {
		before, err := direct.Dump(ctx, prefix+key).Result()
		if err != nil {
			t.Fatal(err)
		}
		wantCorrupt := func(op string, err error) {
			t.Helper()
			if !errors.Is(err, storage.ErrCorrupt) || !strings.Contains(err.Error(), strconv.Quote(prefix+key)) {
				t.Errorf("%s(%q): %v; want an error wrapping storage.ErrCorrupt that names the Redis key", op, key, err)
			}
		}
		rec, err := s.Get(ctx, key)
		wantCorrupt("Get", err)
		if rec.Version != 0 || rec.Value != nil {
			t.Errorf("Get(%q) = %+v with the error, want a zero Record", key, rec)
		}
		for _, expected := range []uint64{0, 1} {
			_, swapped, err := s.CompareAndSwap(ctx, key, expected, []byte("mine"), time.Minute)
			wantCorrupt(fmt.Sprintf("CompareAndSwap(expected %d)", expected), err)
			if swapped {
				t.Errorf("CompareAndSwap(%q, expected %d) swapped over a foreign value", key, expected)
			}
		}
		wantCorrupt("Delete", s.Delete(ctx, key))
		if after, err := direct.Dump(ctx, prefix+key).Result(); err != nil || after != before {
			t.Errorf("%q changed: DUMP %q, %v; want %q", key, after, err, before)
		}
	}
}

func TestScriptReloadedAfterFlush(t *testing.T) {
	ctx := t.Context()
	s, direct := ownServer(t)
	var rec storage.Record
	for i, step := range []struct {
		flush bool  // SCRIPT FLUSH before the call
		evals int64 // EVAL commands the server has run after it
	}{
		{evals: 1},              // EVALSHA fails with NOSCRIPT, then EVAL
		{evals: 1},              // the server knows the script
		{flush: true, evals: 2}, // it forgot it: EVAL once more
		{evals: 2},
	} {
		if step.flush {
			if err := direct.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		got, swapped, err := s.CompareAndSwap(ctx, "k", rec.Version, []byte("v"), time.Minute)
		if err != nil || !swapped {
			t.Fatalf("step %d: CompareAndSwap = %+v, %t, %v; want a swap", i, got, swapped, err)
		}
		rec = got
		if got, want := commandCalls(t, direct)["eval"], step.evals; got != want {
			t.Fatalf("step %d (flush %t): the server has run EVAL %d times, want %d", i, step.flush, got, want)
		}
	}
}

// proxiedStore returns a store that reaches a throwaway server through a
// proxy that can lose its replies, a client straight to the server, the
// proxy, and the record of a first write of "k" through the store. The
// store's client retries as by default (MaxRetries 3): the store must
// still never send a compare-and-swap twice.
func proxiedStore(t *testing.T) (*redis.Store, *goredis.Client, *proxy, storage.Record) {
	t.Helper()
	srv := testbackend.StartRedis(t)
	direct := ownClient(t, srv.Addr())
	p := startProxy(t, srv.Addr())
	s, err := redis.New(ownClient(t, p.addr()))
	if err != nil {
		t.Fatal(err)
	}
	rec, swapped, err := s.CompareAndSwap(t.Context(), "k", 0, []byte("v1"), time.Minute)
	if err != nil || !swapped {
		t.Fatalf("first CompareAndSwap = %+v, %t, %v", rec, swapped, err)
	}
	return s, direct, p, rec
}

// A compare-and-swap whose reply is lost, or never comes, may or may not
// have landed: the store says it does not know (storage.ErrUnavailable),
// and the client does not send it a second time.
func TestLostReplyIsUnavailable(t *testing.T) {
	ctx := t.Context()
	s, direct, p, rec := proxiedStore(t)

	for _, tc := range []struct {
		name    string
		mode    int32
		timeout time.Duration
		want    error
	}{
		{"connection closed before the reply", cutReplies, 5 * time.Second, nil},
		{"no reply before the deadline", holdReplies, 300 * time.Millisecond, context.DeadlineExceeded},
	} {
		value := []byte(tc.name)
		before := commandCalls(t, direct)["evalsha"]
		p.mode.Store(tc.mode)
		callCtx, cancel := context.WithTimeout(ctx, tc.timeout)
		start := time.Now()
		got, swapped, err := s.CompareAndSwap(callCtx, "k", rec.Version, value, time.Minute)
		elapsed := time.Since(start)
		cancel()
		p.mode.Store(passReplies)
		if !errors.Is(err, storage.ErrUnavailable) || swapped || got.Version != 0 {
			t.Fatalf("%s: CompareAndSwap = %+v, %t, %v; want an error wrapping storage.ErrUnavailable", tc.name, got, swapped, err)
		}
		if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: %v; want it to match %v too", tc.name, err, tc.want)
		}
		if elapsed > tc.timeout+time.Second {
			t.Errorf("%s: CompareAndSwap took %v with a %v deadline", tc.name, elapsed, tc.timeout)
		}
		if got, want := commandCalls(t, direct)["evalsha"]-before, int64(1); got != want {
			t.Errorf("%s: the server ran EVALSHA %d times for one call, want %d", tc.name, got, want)
		}
		now, err := s.Get(ctx, "k")
		if err != nil || string(now.Value) != tc.name || now.Version <= rec.Version {
			t.Fatalf("%s: Get = %+v, %v; want the write that landed", tc.name, now, err)
		}
		rec = now
	}
}

// A Delete whose reply is lost is not sent again either: had another
// client written the key in between, a second Delete would remove that
// newer record, and with it the tokens a decision took after the first.
// The store says it does not know (storage.ErrUnavailable).
func TestLostDeleteReplyIsNotRetried(t *testing.T) {
	ctx := t.Context()
	s, direct, p, _ := proxiedStore(t)
	if err := s.Delete(ctx, "other"); err != nil { // loads the script
		t.Fatal(err)
	}
	before := commandCalls(t, direct)["evalsha"]
	p.mode.Store(cutReplies)
	err := s.Delete(ctx, "k")
	p.mode.Store(passReplies)
	if !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("Delete = %v; want an error wrapping storage.ErrUnavailable", err)
	}
	if got := commandCalls(t, direct)["evalsha"] - before; got != 1 {
		t.Errorf("the server ran EVALSHA %d times for one Delete, want 1", got)
	}
	if rec, err := s.Get(ctx, "k"); err != nil || rec.Version != 0 {
		t.Fatalf("Get after the Delete that landed = %+v, %v; want absent", rec, err)
	}
}

// With the server stopped, every call fails within its deadline with an
// error wrapping storage.ErrUnavailable; nothing hangs or leaks, and the
// store works again once the server is back.
func TestServerStopped(t *testing.T) {
	srv := testbackend.StartRedis(t)
	goroutines := runtime.NumGoroutine()
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	s, err := redis.New(client)
	if err != nil {
		t.Fatal(err)
	}
	lim, err := limiter.New(s, []limiter.Bucket{{Capacity: 1 << 40, Period: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	const deadline = 300 * time.Millisecond
	call := func(g, i int) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(t.Context(), deadline)
		defer cancel()
		start := time.Now()
		var err error
		switch i % 3 {
		case 0:
			_, err = lim.Allow(ctx, fmt.Sprintf("k%d", g))
		case 1:
			_, _, err = s.CompareAndSwap(ctx, fmt.Sprintf("raw%d", g), 0, []byte("v"), time.Minute)
		case 2:
			_, err = s.Get(ctx, fmt.Sprintf("raw%d", g))
		}
		return time.Since(start), err
	}
	// hammer runs 8 goroutines of 9 calls each and returns their errors.
	hammer := func() []error {
		var (
			mu   sync.Mutex
			errs []error
			wg   sync.WaitGroup
		)
		for g := range 8 {
			wg.Go(func() {
				for i := range 9 {
					elapsed, err := call(g, i)
					if elapsed > deadline+500*time.Millisecond {
						err = fmt.Errorf("call took %v with a %v deadline: %w", elapsed, deadline, err)
					}
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return errs
	}
	for _, err := range hammer() {
		if err != nil {
			t.Fatalf("with the server up: %v", err)
		}
	}
	srv.Stop()
	for _, err := range hammer() {
		if !errors.Is(err, storage.ErrUnavailable) || strings.Contains(err.Error(), "took") {
			t.Fatalf("with the server stopped: %v; want an error wrapping storage.ErrUnavailable within the deadline", err)
		}
	}
	srv.Start()
	var errs []error
	for range 50 { // the pool redials on the next calls
		if errs = hammer(); errors.Join(errs...) == nil {
			break
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("after the server came back: %v", err)
	}
	s.Close()
	client.Close()
	for range 100 {
		if runtime.NumGoroutine() <= goroutines {
			return
		}
		time.Sleep(20 * time.Millisecond) // goroutines end on their own
	}
	t.Errorf("%d goroutines after the client was closed, %d before it was made", runtime.NumGoroutine(), goroutines)
}

// A server that refuses the script says so in the error.
func TestServerRefuses(t *testing.T) {
	ctx := t.Context()
	srv := testbackend.StartRedis(t)
	admin := ownClient(t, srv.Addr())
	for _, cmd := range [][]any{
		{"acl", "setuser", "reader", "on", ">reader-pw", "~*", "+@all", "-@scripting"},
		{"config", "set", "requirepass", "admin-pw"}, // last: it locks out the admin client's next connection
	} {
		if err := admin.Do(ctx, cmd...).Err(); err != nil {
			t.Fatalf("%v: %v", cmd, err)
		}
	}
	primary := testbackend.StartRedis(t)
	host, port, _ := net.SplitHostPort(primary.Addr())
	replica := testbackend.StartRedis(t, "--replicaof", host, port)

	for _, tc := range []struct {
		name string
		opt  goredis.Options
		want string
	}{
		{"no password", goredis.Options{Addr: srv.Addr()}, "NOAUTH"},
		{"wrong password", goredis.Options{Addr: srv.Addr(), Password: "nope"}, "WRONGPASS"},
		{"user without scripting", goredis.Options{Addr: srv.Addr(), Username: "reader", Password: "reader-pw"}, "NOPERM"},
		{"read-only replica", goredis.Options{Addr: replica.Addr()}, "READONLY"},
	} {
		tc.opt.ContextTimeoutEnabled = true
		client := goredis.NewClient(&tc.opt)
		s, err := redis.New(client)
		if err != nil {
			t.Fatal(err)
		}
		_, swapped, err := s.CompareAndSwap(ctx, "k", 0, []byte("v"), time.Minute)
		client.Close()
		if swapped || !errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), tc.want) ||
			!strings.HasPrefix(err.Error(), `redis: cas "k": `) {
			t.Errorf("%s: CompareAndSwap: swapped %t, %v; want an error wrapping storage.ErrUnavailable that says %s", tc.name, swapped, err, tc.want)
		}
		var rerr goredis.Error
		if !errors.As(err, &rerr) {
			t.Errorf("%s: %v does not wrap the go-redis error", tc.name, err)
		}
		t.Logf("%s: %v", tc.name, err)
	}
}

// Environment of the child processes of TestManyProcesses.
const (
	childEnv       = "SLUICE_REDIS_TEST_CHILD" // "keys,attempts,unix nanoseconds"
	childURLEnv    = "SLUICE_REDIS_TEST_CHILD_URL"
	childPrefix    = "SLUICE_REDIS_TEST_CHILD_PREFIX"
	childResult    = "sluice-child-admitted:"
	childContended = "sluice-child-contended:"
	processes      = 4
	perProcess     = 16 // goroutines
	totalAttempts  = 20_000
)

// Four processes, each with its own client and Limiter and 16 goroutines,
// share one limit of 1000 per hour: 20,000 attempts admit exactly 1000 per
// key. Every process reads the same frozen clock, so no token refills
// during the run and the count is exact.
func TestManyProcesses(t *testing.T) {
	if spec := os.Getenv(childEnv); spec != "" {
		runChild(t, spec)
		return
	}
	url := testbackend.RedisURL(t)
	opt, err := goredis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	for _, keys := range []int{1, 10} {
		t.Run(fmt.Sprintf("keys=%d", keys), func(t *testing.T) {
			prefix := testPrefix(t)
			t.Cleanup(func() {
				c := goredis.NewClient(opt)
				deletePrefix(t, c, prefix)
				c.Close()
			})
			spec := fmt.Sprintf("%d,%d,%d", keys, totalAttempts/processes, time.Now().UnixNano())
			var (
				wg        sync.WaitGroup
				outs      [processes][]byte
				errs      [processes]error
				admitted  = make([]int, keys)
				contended int
			)
			start := time.Now()
			for i := range processes {
				wg.Go(func() {
					cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestManyProcesses$", "-test.count=1")
					cmd.Env = append(os.Environ(), childEnv+"="+spec, childURLEnv+"="+url, childPrefix+"="+prefix)
					outs[i], errs[i] = cmd.CombinedOutput()
				})
			}
			wg.Wait()
			for i := range processes {
				if errs[i] != nil {
					t.Fatalf("process %d: %v\n%s", i, errs[i], outs[i])
				}
				counts, err := parseChild(outs[i], childResult, keys)
				if err != nil {
					t.Fatalf("process %d: %v\n%s", i, err, outs[i])
				}
				for k, n := range counts {
					admitted[k] += n
				}
				if n, err := parseChild(outs[i], childContended, 1); err == nil {
					contended += n[0]
				}
			}
			total := 0
			for k, n := range admitted {
				if n != 1000 {
					t.Errorf("key %d: %d admitted by %d processes, want exactly 1000", k, n, processes)
				}
				total += n
			}
			t.Logf("%d processes x %d goroutines, %d attempts over %d keys: %d admitted, %d limiter.ErrContention, in %v",
				processes, perProcess, totalAttempts, keys, total, contended, time.Since(start).Round(time.Millisecond))
		})
	}
}

// runChild is one process of TestManyProcesses: it prints how many of its
// attempts were admitted, per key.
func runChild(t *testing.T, spec string) {
	var keys, attempts int
	var now int64
	if _, err := fmt.Sscanf(spec, "%d,%d,%d", &keys, &attempts, &now); err != nil {
		t.Fatalf("%s=%q: %v", childEnv, spec, err)
	}
	opt, err := goredis.ParseURL(os.Getenv(childURLEnv))
	if err != nil {
		t.Fatal(err)
	}
	opt.ContextTimeoutEnabled = true
	client := goredis.NewClient(opt)
	defer client.Close()
	s, err := redis.New(client, redis.WithPrefix(os.Getenv(childPrefix)))
	if err != nil {
		t.Fatal(err)
	}
	lim, err := limiter.New(s, []limiter.Bucket{{Capacity: 1000, Period: time.Hour}},
		limiter.WithName("procs"), limiter.WithClock(fakeclock.New(time.Unix(0, now))))
	if err != nil {
		t.Fatal(err)
	}
	counts := make([]atomic.Int64, keys)
	var (
		wg        sync.WaitGroup
		contended atomic.Int64
	)
	for g := range perProcess {
		wg.Go(func() {
			for i := g; i < attempts; i += perProcess {
				k := i % keys
				d, err := lim.Allow(t.Context(), fmt.Sprintf("key%d", k))
				switch {
				case errors.Is(err, limiter.ErrContention):
					// Lost too many swaps to the other processes; it took
					// nothing, so it counts as an attempt not admitted.
					contended.Add(1)
				case err != nil:
					t.Error(err)
					return
				case d.Allowed:
					counts[k].Add(1)
				}
			}
		})
	}
	wg.Wait()
	line := childResult
	for k := range counts {
		line += " " + strconv.FormatInt(counts[k].Load(), 10)
	}
	fmt.Println(line)
	fmt.Printf("%s %d\n", childContended, contended.Load())
}

// parseChild reads the n counts a child printed after label.
func parseChild(out []byte, label string, keys int) ([]int, error) {
	for line := range strings.Lines(string(out)) {
		rest, ok := strings.CutPrefix(line, label)
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != keys {
			return nil, fmt.Errorf("%d counts, want %d", len(fields), keys)
		}
		counts := make([]int, keys)
		for i, f := range fields {
			n, err := strconv.Atoi(f)
			if err != nil {
				return nil, err
			}
			counts[i] = n
		}
		return counts, nil
	}
	return nil, fmt.Errorf("no line %q", label)
}

// In steady state an allowed decision costs one Redis command, EVALSHA
// (whose script runs GET and SET inside the server: a live record needs no
// TIME), and a denial of
// an exhausted key none: the limiter keeps the record the script returned.
// Counted from INFO commandstats of an own server.
func TestCommandsPerDecision(t *testing.T) {
	ctx := t.Context()
	s, direct := ownServer(t)
	const capacity = 200
	lim, err := limiter.New(s, []limiter.Bucket{{Capacity: capacity, Period: time.Hour}},
		limiter.WithClock(fakeclock.New(time.Unix(1e9, 0))))
	if err != nil {
		t.Fatal(err)
	}
	// allow makes n calls that must be allowed (or denied) and returns the
	// commands the server ran meanwhile, but INFO.
	allow := func(n int, want bool) map[string]int64 {
		t.Helper()
		before := commandCalls(t, direct)
		for i := range n {
			d, err := lim.Allow(ctx, "k")
			if err != nil || d.Allowed != want {
				t.Fatalf("call %d: Allow = %+v, %v; want Allowed %t", i, d, err, want)
			}
		}
		ran := map[string]int64{}
		for name, calls := range commandCalls(t, direct) {
			if d := calls - before[name]; d != 0 && name != "info" {
				ran[name] = d
			}
		}
		return ran
	}
	allow(10, true) // warm up: load the script, open the connection
	const n = capacity - 10
	if got, want := allow(n, true), map[string]int64{"evalsha": n, "get": n, "time": n, "set": n}; !maps.Equal(got, want) {
		t.Errorf("%d allowed decisions: the server ran %v, want %v (one EVALSHA each, and its script's commands)", n, got, want)
	}
	if got := allow(100, false); len(got) != 0 {
		t.Errorf("100 denials of an exhausted key: the server ran %v, want nothing", got)
	}
}

// The stored layout is the one doc.go documents, and the time to live is
// the one asked for, rounded up to the millisecond.
func TestRecordLayout(t *testing.T) {
	ctx := t.Context()
	m := miniredis.RunT(t)
	s, err := redis.New(ownClient(t, m.Addr()), redis.WithPrefix("app:"))
	if err != nil {
		t.Fatal(err)
	}
	rec, _, err := s.CompareAndSwap(ctx, "user:{42}", 0, []byte("state"), 1500*time.Microsecond+time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	want = append(want, 0xF8)
	want = binary.BigEndian.AppendUint64(want, rec.Version)
	want = append(want, "state"...)
	if got, err := m.Get("app:user:{42}"); err != nil || got != string(want) {
		t.Errorf("stored %q, %v; want %q", got, err, want)
	}
	if got, want := m.TTL("app:user:{42}"), 1002*time.Millisecond; got != want {
		t.Errorf("time to live %v, want %v", got, want)
	}
	if err := s.Delete(ctx, "user:{42}"); err != nil {
		t.Fatal(err)
	}
	want[0] = 0xF9
	if got, err := m.Get("app:user:{42}"); err != nil || got != string(want[:9]) {
		t.Errorf("after Delete: stored %q, %v; want the tombstone %q", got, err, want[:9])
	}
	if got, want := m.TTL("app:user:{42}"), time.Second; got != want {
		t.Errorf("tombstone's time to live %v, want %v", got, want)
	}
}

// Versions grow by one when the server clock stands still or goes back,
// and a write right after a Delete, in the same microsecond, still gets a
// greater version: the tombstone remembers the deleted one. miniredis
// lets the test set the clock TIME reads.
func TestVersionsWithoutClockProgress(t *testing.T) {
	ctx := t.Context()
	m := miniredis.RunT(t)
	m.ClockTTL(true)
	now := time.Unix(1_700_000_000, 123_456_000)
	m.SetTime(now)
	s, err := redis.New(ownClient(t, m.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	base := uint64(now.UnixMicro()) * 4096
	var rec storage.Record
	for i, step := range []struct {
		at      time.Duration // server clock, from now, before the step
		delete  bool          // Delete before the write
		then    time.Duration // server clock, from now, after the Delete
		version uint64        // the version the write must get
	}{
		{version: base},
		{version: base + 1},                   // the same microsecond
		{at: -time.Second, version: base + 2}, // the clock went back (less than the ttl)
		{delete: true, version: base + 3},     // written in the microsecond of the Delete
		{delete: true, then: 1500 * time.Millisecond, version: base + 1_500_000*4096}, // the tombstone has expired
	} {
		m.SetTime(now.Add(step.at))
		expected := rec.Version
		if step.delete {
			if err := s.Delete(ctx, "k"); err != nil {
				t.Fatal(err)
			}
			m.SetTime(now.Add(step.then))
			expected = 0
		}
		got, swapped, err := s.CompareAndSwap(ctx, "k", expected, []byte("v"), time.Minute)
		if err != nil || !swapped {
			t.Fatalf("step %d: CompareAndSwap(expected %d) = %+v, %t, %v; want a swap", i, expected, got, swapped, err)
		}
		if got.Version != step.version {
			t.Errorf("step %d: Version %d, want %d (%+d)", i, got.Version, step.version, int64(got.Version-step.version))
		}
		rec = got
	}
}

// fillInFlight starts redis.MaxInFlight compare-and-swaps that g holds
// back, on keys "held0", "held1", ..., and returns once they are in
// flight: the store queues the calls that follow. wg waits for them.
func fillInFlight(t *testing.T, s *redis.Store, g *gate, wg *sync.WaitGroup) {
	t.Helper()
	g.holdSingle.Store(true)
	for i := range redis.MaxInFlight {
		wg.Go(func() {
			_, _, _ = s.CompareAndSwap(context.Background(), fmt.Sprintf("held%d", i), 0, []byte("held"), time.Minute)
		})
	}
	g.wait(t, redis.MaxInFlight)
}

// gatedStore adds a gate to client and returns a store over it whose
// compare-and-swap script is loaded (by a swap on "warm"), so that every
// EVALSHA that follows runs.
func gatedStore(t *testing.T, client *goredis.Client) (*redis.Store, *gate) {
	t.Helper()
	g := newGate()
	client.AddHook(g)
	s, err := redis.New(client)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CompareAndSwap(t.Context(), "warm", 0, []byte("warm"), time.Minute); err != nil {
		t.Fatal(err)
	}
	return s, g
}

// waitQueued waits until n calls of s are queued.
func waitQueued(t *testing.T, s *redis.Store, n int) {
	t.Helper()
	for i := 0; redis.Queued(s) != n; i++ {
		if i == 1000 {
			t.Fatalf("%d calls queued after 10s, want %d", redis.Queued(s), n)
		}
		time.Sleep(10 * time.Millisecond) // goroutines reaching the queue
	}
}

// startSwaps starts n compare-and-swaps inserting "v" under keys "k0",
// "k1", ..., whose results wg.Wait makes ready.
func startSwaps(ctx context.Context, s *redis.Store, wg *sync.WaitGroup, n int) []casResult {
	results := make([]casResult, n)
	for i := range n {
		wg.Go(func() {
			r := &results[i]
			r.rec, r.swapped, r.err = s.CompareAndSwap(ctx, fmt.Sprintf("k%d", i), 0, []byte("v"), time.Minute)
		})
	}
	return results
}

// casResult is what a CompareAndSwap returned.
type casResult struct {
	rec     storage.Record
	swapped bool
	err     error
}

// A pipeline that a hook fails before it runs, without giving its
// commands the error, fails each call in it with that error, wrapping
// storage.ErrUnavailable: a command left without a reply is not an empty
// record (which would read as corrupt).
func TestPipelineFailedByHook(t *testing.T) {
	srv := testbackend.StartRedis(t)
	s, g := gatedStore(t, ownClient(t, srv.Addr()))
	var held, wg sync.WaitGroup
	fillInFlight(t, s, g, &held)
	g.failPipes.Store(true)
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			if i%2 == 0 {
				_, errs[i] = s.Get(context.Background(), "warm")
			} else {
				_, _, errs[i] = s.CompareAndSwap(context.Background(), "warm", 1, []byte("v"), time.Minute)
			}
		})
	}
	waitQueued(t, s, len(errs))
	close(g.release)
	held.Wait()
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, storage.ErrUnavailable) || !errors.Is(err, errHeldBack) || errors.Is(err, storage.ErrCorrupt) {
			t.Errorf("call %d in a pipeline failed by a hook: %v; want an error wrapping storage.ErrUnavailable and the hook's error", i, err)
		}
	}
	if got := g.sent(); len(got) != 1 || got[0] != len(errs) {
		t.Errorf("pipelines %v, want one of %d commands", got, len(errs))
	}
}

// A pipeline whose connection cannot be set up because the server answers
// the handshake with an error reply (WRONGPASS after the password changed,
// or the maximum number of clients reached) fails each call in it as
// unavailable: go-redis returns that reply from Exec without giving it to
// the commands, which are then left with neither reply nor error, and a
// GET among them is not an empty record.
func TestPipelineHandshakeFailure(t *testing.T) {
	for _, mode := range []string{"wrongpass", "maxclients"} {
		t.Run(mode, func(t *testing.T) {
			srv := testbackend.StartRedis(t)
			client := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), Password: "pw1", ContextTimeoutEnabled: true})
			t.Cleanup(func() { client.Close() })
			admin := ownClient(t, srv.Addr())
			s, g := gatedStore(t, client)
			if err := client.Set(t.Context(), "sluice:k", "x", 0).Err(); err != nil {
				t.Fatal(err)
			}
			var held, wg sync.WaitGroup
			fillInFlight(t, s, g, &held)
			ctx := t.Context()
			setting, value := "requirepass", "pw2"
			if mode == "maxclients" {
				setting, value = "maxclients", "1"
			}
			if err := admin.ConfigSet(ctx, setting, value).Err(); err != nil {
				t.Fatal(err)
			}
			if err := admin.Do(ctx, "client", "kill", "type", "normal", "skipme", "yes").Err(); err != nil {
				t.Fatal(err)
			}
			errs := make([]error, 4)
			for i := range errs {
				wg.Go(func() {
					switch i {
					case 0:
						_, errs[i] = s.Get(context.Background(), "absent")
					case 1:
						_, errs[i] = s.Get(context.Background(), "k")
					case 2:
						_, _, errs[i] = s.CompareAndSwap(context.Background(), "c", 0, []byte("v"), time.Minute)
					case 3:
						_, _, _, errs[i] = s.CompareAndSwapTimed(context.Background(), "d", 0, []byte("v"), time.Minute)
					}
				})
				waitQueued(t, s, i+1)
			}
			close(g.release)
			held.Wait()
			wg.Wait()
			for i, err := range errs {
				if !errors.Is(err, storage.ErrUnavailable) || errors.Is(err, storage.ErrCorrupt) {
					t.Errorf("call %d in a pipeline whose connection failed its handshake: %v; want unavailable, not corrupt", i, err)
				}
			}
		})
	}
}

// A Get of a value sluice did not write, the empty string, pipelined with
// a Get of an absent key: the absent key's "nil" reply, which go-redis also
// returns from the pipeline as a whole, is not given to the other Get,
// which reads the empty string and reports it corrupt.
func TestPipelinedGetOfEmptyForeignValue(t *testing.T) {
	srv := testbackend.StartRedis(t)
	client := ownClient(t, srv.Addr())
	s, g := gatedStore(t, client)
	if err := client.Set(t.Context(), "sluice:empty", "", 0).Err(); err != nil {
		t.Fatal(err)
	}
	var held, wg sync.WaitGroup
	fillInFlight(t, s, g, &held)
	var (
		absent, empty       storage.Record
		errAbsent, errEmpty error
	)
	wg.Go(func() { absent, errAbsent = s.Get(context.Background(), "absent") })
	waitQueued(t, s, 1)
	wg.Go(func() { empty, errEmpty = s.Get(context.Background(), "empty") })
	waitQueued(t, s, 2)
	g.holdSingle.Store(false)
	close(g.release)
	held.Wait()
	wg.Wait()
	if errAbsent != nil || absent.Version != 0 {
		t.Errorf("Get(absent) = %+v, %v; want absent", absent, errAbsent)
	}
	if !errors.Is(errEmpty, storage.ErrCorrupt) {
		t.Errorf("Get of the empty string, pipelined after an absent key = %+v, %v; want an error wrapping storage.ErrCorrupt", empty, errEmpty)
	}
	if got := g.sent(); len(got) != 1 || got[0] != 2 {
		t.Errorf("pipelines %v, want one of 2 commands", got)
	}
}

// Calls on different keys issued while the round trips in flight are
// busy go out together in one pipeline, and each caller gets exactly its
// own result: swaps on many keys, a Get and a GetTimed among them. A
// caller that gives up while queued leaves the others alone and writes
// nothing.
func TestPipelinedCalls(t *testing.T) {
	srv := testbackend.StartRedis(t)
	testPipelinedCalls(t, ownClient(t, srv.Addr()))
}

// testPipelinedCalls is TestPipelinedCalls over client, which it closes.
func testPipelinedCalls(t *testing.T, client goredis.UniversalClient) {
	ctx := t.Context()
	g := newGate()
	client.AddHook(g)
	s := openStore(t, client, testPrefix(t))
	var err error
	// Load the script, so that every EVALSHA below runs.
	warm, _, err := s.CompareAndSwap(ctx, "warm", 0, []byte("warm"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	var held, wg sync.WaitGroup
	fillInFlight(t, s, g, &held)
	const n = 40
	results := make([]casResult, n)
	for i := range n {
		wg.Go(func() {
			r := &results[i]
			r.rec, r.swapped, r.err = s.CompareAndSwap(ctx, fmt.Sprintf("k%d", i), 0, fmt.Appendf(nil, "value %d", i), time.Minute)
		})
	}
	var (
		got, gotTimed       storage.Record
		errGet, errGetTimed error
		now                 time.Time
	)
	wg.Go(func() { got, errGet = s.Get(ctx, "warm") })
	wg.Go(func() { gotTimed, now, errGetTimed = s.GetTimed(ctx, "warm") })
	cancelled, cancel := context.WithCancel(ctx)
	errCancelled := make(chan error, 1)
	go func() {
		_, _, err := s.CompareAndSwap(cancelled, "cancelled", 0, []byte("v"), time.Minute)
		errCancelled <- err
	}()
	waitQueued(t, s, n+3)
	cancel()
	if err := <-errCancelled; !errors.Is(err, context.Canceled) {
		t.Errorf("CompareAndSwap cancelled while queued: %v; want an error matching context.Canceled", err)
	}
	waitQueued(t, s, n+2)

	g.holdSingle.Store(false)
	close(g.release)
	held.Wait()
	wg.Wait()
	for i, r := range results {
		if want := fmt.Sprintf("value %d", i); r.err != nil || !r.swapped || r.rec.Version == 0 || string(r.rec.Value) != want {
			t.Errorf("CompareAndSwap(k%d) = %+v, %t, %v; want a swap to %q", i, r.rec, r.swapped, r.err, want)
		}
		if rec, err := s.Get(ctx, fmt.Sprintf("k%d", i)); err != nil || rec.Version != r.rec.Version || !bytes.Equal(rec.Value, r.rec.Value) {
			t.Errorf("Get(k%d) = %+v, %v; want %+v", i, rec, err, r.rec)
		}
	}
	if errGet != nil || got.Version != warm.Version || string(got.Value) != "warm" {
		t.Errorf("Get(warm) = %+v, %v; want %+v", got, errGet, warm)
	}
	if errGetTimed != nil || gotTimed.Version != warm.Version || string(gotTimed.Value) != "warm" || now.IsZero() {
		t.Errorf("GetTimed(warm) = %+v, %v, %v; want %+v and the server's clock", gotTimed, now, errGetTimed, warm)
	}
	if rec, err := s.Get(ctx, "cancelled"); err != nil || rec.Version != 0 {
		t.Errorf("the cancelled call wrote its key: Get = %+v, %v; want it absent", rec, err)
	}
	if got, want := g.sent(), []int{n + 2}; !slices.Equal(got, want) {
		t.Errorf("pipelines of %v commands, want %v: every queued call in one", got, want)
	}
}

// A caller that gives up while its pipeline is on its way stops waiting at
// once, with an error that says the outcome is unknown; the other calls of
// the pipeline are not disturbed.
func TestPipelineCallerGivesUp(t *testing.T) {
	ctx := t.Context()
	srv := testbackend.StartRedis(t)
	client := ownClient(t, srv.Addr())
	s, g := gatedStore(t, client)
	var held, wg sync.WaitGroup
	fillInFlight(t, s, g, &held)
	const n = 10
	results := make([]casResult, n)
	callCtx, cancel := context.WithCancel(ctx)
	given := make(chan casResult, 1)
	go func() {
		var r casResult
		r.rec, r.swapped, r.err = s.CompareAndSwap(callCtx, "k0", 0, []byte("v"), time.Minute)
		given <- r
	}()
	// The caller that gives up is the first of its pipeline, whose context
	// the pipeline's could be derived from.
	waitQueued(t, s, 1)
	for i := 1; i < n; i++ {
		wg.Go(func() {
			r := &results[i]
			r.rec, r.swapped, r.err = s.CompareAndSwap(ctx, fmt.Sprintf("k%d", i), 0, []byte("v"), time.Minute)
		})
	}
	waitQueued(t, s, n)
	// Release the held calls; the pipeline of the queued ones waits at the
	// gate in turn.
	g.holdPipes.Store(true)
	g.holdSingle.Store(false)
	close(g.release)
	held.Wait()
	g.wait(t, 1)
	cancel()
	// The cancelled caller returns while its pipeline still waits.
	if r := <-given; !errors.Is(r.err, storage.ErrUnavailable) || !errors.Is(r.err, context.Canceled) || r.swapped {
		t.Errorf("cancelled CompareAndSwap = %+v, %t, %v; want an error wrapping storage.ErrUnavailable and context.Canceled", r.rec, r.swapped, r.err)
	}
	close(g.releasePipes)
	wg.Wait()
	for i := 1; i < n; i++ {
		if r := results[i]; r.err != nil || !r.swapped {
			t.Errorf("CompareAndSwap(k%d) = %+v, %t, %v; want a swap", i, r.rec, r.swapped, r.err)
		}
	}
}

// A pipeline runs to the latest deadline of its calls: a caller with a
// short deadline gives up alone, and the call beside it with a long one
// is still served after the short deadline has passed.
func TestPipelineKeepsLatestDeadline(t *testing.T) {
	srv := testbackend.StartRedis(t)
	s, g := gatedStore(t, ownClient(t, srv.Addr()))
	var held, wg sync.WaitGroup
	fillInFlight(t, s, g, &held)
	short, cancelShort := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancelShort()
	long, cancelLong := context.WithTimeout(t.Context(), time.Minute)
	defer cancelLong()
	var a, b casResult
	wg.Go(func() { a.rec, a.swapped, a.err = s.CompareAndSwap(short, "short", 0, []byte("v"), time.Minute) })
	wg.Go(func() { b.rec, b.swapped, b.err = s.CompareAndSwap(long, "long", 0, []byte("v"), time.Minute) })
	waitQueued(t, s, 2)
	g.holdPipes.Store(true)
	g.holdSingle.Store(false)
	close(g.release)
	held.Wait()
	g.wait(t, 1) // the pipeline of both waits at the gate
	<-short.Done()
	time.Sleep(50 * time.Millisecond) // past the short deadline, by the pipeline's clock too
	close(g.releasePipes)
	wg.Wait()
	if !errors.Is(a.err, context.DeadlineExceeded) {
		t.Errorf("CompareAndSwap with a 100ms deadline, held 150ms = %+v, %t, %v; want an error matching context.DeadlineExceeded", a.rec, a.swapped, a.err)
	}
	if b.err != nil || !b.swapped {
		t.Errorf("CompareAndSwap with a minute's deadline in the same pipeline = %+v, %t, %v; want a swap", b.rec, b.swapped, b.err)
	}
}

// endedCtx is a context whose Err reports Canceled once ended is set,
// without its Done channel ever closing: a call queued with it is seen to
// have ended only when its pipeline is put together.
type endedCtx struct {
	context.Context
	ended atomic.Bool
}

func (c *endedCtx) Done() <-chan struct{} { return nil }

func (c *endedCtx) Err() error {
	if c.ended.Load() {
		return context.Canceled
	}
	return nil
}

// A queued call whose context has ended by the time its pipeline is put
// together is left out of it, and its caller gets the context's error:
// not a reply that was never sent.
func TestPipelineLeavesOutEndedCalls(t *testing.T) {
	srv := testbackend.StartRedis(t)
	s, g := gatedStore(t, ownClient(t, srv.Addr()))
	var held, wg sync.WaitGroup
	fillInFlight(t, s, g, &held)
	ctx := &endedCtx{Context: context.Background()}
	var swapErr, getErr error
	wg.Go(func() { _, _, swapErr = s.CompareAndSwap(ctx, "ended", 0, []byte("v"), time.Minute) })
	wg.Go(func() { _, getErr = s.Get(ctx, "warm") })
	waitQueued(t, s, 2)
	ctx.ended.Store(true)
	g.holdSingle.Store(false)
	close(g.release)
	held.Wait()
	wg.Wait()
	if !errors.Is(swapErr, context.Canceled) {
		t.Errorf("CompareAndSwap whose context ended while queued = %v; want an error matching context.Canceled", swapErr)
	}
	if !errors.Is(getErr, context.Canceled) || errors.Is(getErr, storage.ErrCorrupt) {
		t.Errorf("Get whose context ended while queued = %v; want an error matching context.Canceled, not a corrupt record", getErr)
	}
	if rec, err := s.Get(t.Context(), "ended"); err != nil || rec.Version != 0 {
		t.Errorf("the left-out call wrote its key: Get = %+v, %v; want it absent", rec, err)
	}
}

// More calls than one pipeline takes go out in several, and every caller
// gets its reply: none is left waiting.
func TestPipelineOverflow(t *testing.T) {
	ctx := t.Context()
	srv := testbackend.StartRedis(t)
	s, g := gatedStore(t, ownClient(t, srv.Addr()))
	var held, wg sync.WaitGroup
	fillInFlight(t, s, g, &held)
	n := redis.MaxBatch + 88
	results := startSwaps(ctx, s, &wg, n)
	waitQueued(t, s, n)
	g.holdSingle.Store(false)
	close(g.release)
	held.Wait()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("callers still waiting 30s after the release; pipelines sent: %v", g.sent())
	}
	for i, r := range results {
		if r.err != nil || !r.swapped {
			t.Errorf("CompareAndSwap(k%d) = %+v, %t, %v; want a swap", i, r.rec, r.swapped, r.err)
		}
	}
	total := 0
	for _, size := range g.sent() {
		if size > redis.MaxBatch {
			t.Errorf("a pipeline of %d commands, more than %d", size, redis.MaxBatch)
		}
		total += size
	}
	if total != n {
		t.Errorf("pipelines %v carried %d commands, want %d", g.sent(), total, n)
	}
}

// When the replies of a pipeline are lost, each of its compare-and-swaps
// may or may not have landed: each caller gets an error wrapping
// storage.ErrUnavailable, and the client sends none of them again.
func TestLostPipelineRepliesAreUnavailable(t *testing.T) {
	ctx := t.Context()
	srv := testbackend.StartRedis(t)
	direct := ownClient(t, srv.Addr())
	p := startProxy(t, srv.Addr())
	client := ownClient(t, p.addr()) // MaxRetries is the default (3)
	s, g := gatedStore(t, client)
	// Open a connection of the client's pipeline pool, so that the reply
	// the proxy cuts is the pipeline's, not a new connection's handshake.
	if _, err := client.Pipelined(ctx, func(p goredis.Pipeliner) error { return p.Ping(ctx).Err() }); err != nil {
		t.Fatal(err)
	}
	var held, wg sync.WaitGroup
	g.failSingle.Store(true) // the held calls never reach the server
	fillInFlight(t, s, g, &held)
	const n = 20
	results := startSwaps(ctx, s, &wg, n)
	waitQueued(t, s, n)
	before := commandCalls(t, direct)["evalsha"]
	p.mode.Store(cutReplies)
	close(g.release)
	held.Wait()
	wg.Wait()
	for i, r := range results {
		if !errors.Is(r.err, storage.ErrUnavailable) || r.swapped {
			t.Errorf("CompareAndSwap(k%d) = %+v, %t, %v; want an error wrapping storage.ErrUnavailable", i, r.rec, r.swapped, r.err)
		}
	}
	if got := g.sent(); !slices.Equal(got, []int{n}) {
		t.Errorf("pipelines of %v commands, want one of %d", got, n)
	}
	ran := commandCalls(t, direct)["evalsha"] - before
	if ran > n {
		t.Errorf("the server ran EVALSHA %d times for %d calls: some were sent again", ran, n)
	}
	t.Logf("%d of the %d compare-and-swaps whose replies were lost had run", ran, n)
}
