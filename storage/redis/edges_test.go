package redis_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/sluice-go/sluice/internal/testbackend"
	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/redis"
)

// versionBackends returns, for the Redis server of testbackend and for
// miniredis (whose clock is set to serverTime), a client and a store over
// it with prefix, so that a test can plant raw records.
func versionBackends(t *testing.T, serverTime time.Time) map[string]struct {
	client goredis.UniversalClient
	store  *redis.Store
	prefix string
} {
	type backend = struct {
		client goredis.UniversalClient
		store  *redis.Store
		prefix string
	}
	opt, err := goredis.ParseURL(testbackend.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	opt.ContextTimeoutEnabled = true
	real := goredis.NewClient(opt)
	m := miniredis.RunT(t)
	m.SetTime(serverTime)
	mini := ownClient(t, m.Addr())
	return map[string]backend{
		"Redis":     {real, openStore(t, real, testPrefix(t)), testPrefix(t)},
		"Miniredis": {mini, openStore(t, mini, "sluice:"), "sluice:"},
	}
}

func rawRecord(tag byte, version uint64, value string) string {
	b := append([]byte{tag}, binary.BigEndian.AppendUint64(nil, version)...)
	return string(append(b, value...))
}

// A swap over a live record stores its version + 1 exactly, also when the
// addition carries out of the last byte or out of the low 32 bits (the
// script adds in two 32-bit halves), and a write after a Delete starts
// above a tombstone whose version is ahead of the server clock's
// (a clock that stepped back), not at the clock.
func TestVersionArithmeticEdges(t *testing.T) {
	for name, b := range versionBackends(t, time.Unix(1_700_000_000, 123_456_000)) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			serverNow, err := b.client.Time(ctx).Result()
			if err != nil {
				t.Fatal(err)
			}
			// 16<<32 is 16<<20 microseconds of the clock: 17 seconds ahead.
			ahead := (uint64(serverNow.UnixMicro())*4096>>32 + 16) << 32
			for _, c := range []struct {
				name    string
				tag     byte
				version uint64
			}{
				{"last byte 0xFF", 0xF8, ahead | 0x5678_9AFF},
				{"low half all ones", 0xF8, ahead | 0xFFFF_FFFF},
				{"live record behind the clock", 0xF8, 0x0000_1234_5678_9AFF},
				{"tombstone ahead of the clock", 0xF9, ahead},
			} {
				key := "edge:" + c.name
				value := ""
				if c.tag == 0xF8 {
					value = "v"
				}
				if err := b.client.Set(ctx, b.prefix+key, rawRecord(c.tag, c.version, value), time.Minute).Err(); err != nil {
					t.Fatal(err)
				}
				expected := c.version
				if c.tag == 0xF9 {
					expected = 0 // a tombstone reads as absent
				}
				rec, swapped, err := b.store.CompareAndSwap(ctx, key, expected, []byte("w"), time.Minute)
				if err != nil || !swapped {
					t.Fatalf("%s: CompareAndSwap(%#x) = %+v, %v, %v; want a swap", c.name, expected, rec, swapped, err)
				}
				if c.version < ahead>>1 {
					// A live record behind the server clock (written on a
					// master that a failover replaced) goes to the clock.
					if min := uint64(serverNow.UnixMicro()) * 4096; rec.Version < min {
						t.Errorf("%s: version %#x after %#x, want at least the clock's %#x", c.name, rec.Version, c.version, min)
					}
				} else if rec.Version != c.version+1 {
					t.Errorf("%s: version %#x after %#x, want %#x", c.name, rec.Version, c.version, c.version+1)
				}
				got, err := b.store.Get(ctx, key)
				if err != nil || got.Version != rec.Version || string(got.Value) != "w" {
					t.Errorf("%s: Get = %+v, %v; want %+v", c.name, got, err, rec)
				}
			}
		})
	}
}

// GetTimed reports a foreign value as Get does (an error wrapping
// storage.ErrCorrupt that names the Redis key, not ErrUnavailable), and a
// WRONGTYPE reply of the server stays reachable with errors.As, as the
// package documentation promises for every error reply.
func TestForeignValueErrors(t *testing.T) {
	ctx := t.Context()
	s := newStore(t).(*redis.Store)
	raw, err := goredis.ParseURL(testbackend.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	direct := goredis.NewClient(raw)
	defer direct.Close()
	prefix := testPrefix(t)
	if err := direct.Set(ctx, prefix+"text", "hello", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := direct.HSet(ctx, prefix+"hash", "f", "v").Err(); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"text", "hash"} {
		rec, now, err := s.GetTimed(ctx, key)
		if !errors.Is(err, storage.ErrCorrupt) || errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), strconv.Quote(prefix+key)) {
			t.Errorf("GetTimed(%q) = %v; want an error wrapping storage.ErrCorrupt (only) that names the Redis key", key, err)
		}
		if rec.Version != 0 || rec.Value != nil || !now.IsZero() {
			t.Errorf("GetTimed(%q) = %+v, %v with the error; want a zero Record and Time", key, rec, now)
		}
	}
	_, err = s.Get(ctx, "hash")
	var rerr goredis.Error
	if !errors.Is(err, storage.ErrCorrupt) || !errors.As(err, &rerr) || !strings.HasPrefix(rerr.Error(), "WRONGTYPE") {
		t.Errorf("Get(hash) = %v; want an error wrapping storage.ErrCorrupt and the server's WRONGTYPE reply", err)
	}
}

// The EVAL that follows a NOSCRIPT reply runs a compare-and-swap too: when
// its reply is lost, the call is an error wrapping storage.ErrUnavailable,
// and the client does not send it again (a second run would report the
// first one's write as a conflict).
func TestLostReplyAfterNoScriptIsUnavailable(t *testing.T) {
	ctx := t.Context()
	s, direct, p, rec := proxiedStore(t)
	if err := direct.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	before := commandCalls(t, direct)["eval"]
	p.mode.Store(cutSecondReply) // NOSCRIPT gets through, EVAL's reply does not
	callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	got, swapped, err := s.CompareAndSwap(callCtx, "k", rec.Version, []byte("v2"), time.Minute)
	cancel()
	p.mode.Store(passReplies)
	if !errors.Is(err, storage.ErrUnavailable) || swapped || got.Version != 0 {
		t.Fatalf("CompareAndSwap with a lost EVAL reply = %+v, %t, %v; want an error wrapping storage.ErrUnavailable", got, swapped, err)
	}
	if n := commandCalls(t, direct)["eval"] - before; n != 1 {
		t.Errorf("the server ran EVAL %d times for one call, want 1", n)
	}
	if now, err := s.Get(ctx, "k"); err != nil || string(now.Value) != "v2" || now.Version <= rec.Version {
		t.Fatalf("Get = %+v, %v; want the write that landed", now, err)
	}
}

// A call waiting for a reply that does not come ends as soon as its
// context is cancelled, with no deadline: go-redis would wait until a
// deadline or its ReadTimeout (here none), so the store stops waiting
// itself, and says the outcome is unknown. This holds for a call sent at
// once, for Delete, and for the EVAL sent after a NOSCRIPT reply.
func TestCancelEndsCallOnHungServer(t *testing.T) {
	srv := testbackend.StartRedis(t)
	direct := ownClient(t, srv.Addr())
	for _, c := range []struct {
		name    string
		command string // as the server counts it once the call is in flight
		flush   bool   // the server forgets the scripts first
		mode    int32
		call    func(ctx context.Context, s *redis.Store, version uint64) error
	}{
		{"CompareAndSwap", "evalsha", false, holdReplies, func(ctx context.Context, s *redis.Store, version uint64) error {
			_, _, err := s.CompareAndSwap(ctx, "k", version, []byte("w"), time.Minute)
			return err
		}},
		{"Get", "get", false, holdReplies, func(ctx context.Context, s *redis.Store, _ uint64) error {
			_, err := s.Get(ctx, "k")
			return err
		}},
		{"Delete", "evalsha", false, holdReplies, func(ctx context.Context, s *redis.Store, _ uint64) error {
			return s.Delete(ctx, "k")
		}},
		{"CompareAndSwap sent again as EVAL", "eval", true, holdSecondReply, func(ctx context.Context, s *redis.Store, version uint64) error {
			_, _, err := s.CompareAndSwap(ctx, "k", version, []byte("w"), time.Minute)
			return err
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := t.Context()
			p := startProxy(t, srv.Addr())
			// One connection, opened before the replies are held back, and
			// no read timeout: the client alone would wait for ever.
			client := goredis.NewClient(&goredis.Options{Addr: p.addr(), ReadTimeout: -1, PoolSize: 1})
			t.Cleanup(func() { client.Close() }) // ends the wait left behind
			s, err := redis.New(client, redis.WithPrefix(testPrefix(t)))
			if err != nil {
				t.Fatal(err)
			}
			rec, _, err := s.CompareAndSwap(ctx, "k", 0, []byte("v"), time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if c.flush {
				if err := direct.ScriptFlush(ctx).Err(); err != nil {
					t.Fatal(err)
				}
			}
			before := commandCalls(t, direct)[c.command]
			p.mode.Store(c.mode)
			callCtx, cancel := context.WithCancel(ctx)
			errc := make(chan error, 1)
			go func() { errc <- c.call(callCtx, s, rec.Version) }()
			for commandCalls(t, direct)[c.command] == before {
				time.Sleep(time.Millisecond) // until the server has run it
			}
			cancel()
			select {
			case err := <-errc:
				if !errors.Is(err, storage.ErrUnavailable) || !errors.Is(err, context.Canceled) {
					t.Errorf("%v; want an error wrapping storage.ErrUnavailable and context.Canceled", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("still waiting 30s after its context was cancelled")
			}
		})
	}
}

// concurrency is a hook that records the most round trips of the store
// (single commands and pipelines) under way at once, each made to last a
// millisecond so that they overlap.
type concurrency struct {
	now, most atomic.Int64
}

func (c *concurrency) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (c *concurrency) enter() func() {
	n := c.now.Add(1)
	for m := c.most.Load(); n > m && !c.most.CompareAndSwap(m, n); m = c.most.Load() {
	}
	time.Sleep(time.Millisecond) // load, not synchronisation
	return func() { c.now.Add(-1) }
}

func (c *concurrency) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		if cmd.Name() == "evalsha" {
			defer c.enter()()
		}
		return next(ctx, cmd)
	}
}

func (c *concurrency) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		if cmds[0].Name() == "evalsha" {
			defer c.enter()()
		}
		return next(ctx, cmds)
	}
}

// However many callers there are, and however often their calls go out as
// pipelines, a store keeps at most MaxInFlight round trips under way.
func TestInFlightBound(t *testing.T) {
	srv := testbackend.StartRedis(t)
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true, PoolSize: 64})
	c := &concurrency{}
	client.AddHook(c)
	s := openStore(t, client, testPrefix(t))
	var wg sync.WaitGroup
	for g := range 64 {
		wg.Go(func() {
			var version uint64
			for range 30 {
				rec, _, err := s.CompareAndSwap(t.Context(), fmt.Sprintf("g%d", g), version, []byte("v"), time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				version = rec.Version
			}
		})
	}
	wg.Wait()
	if most := c.most.Load(); most > redis.MaxInFlight {
		t.Fatalf("%d round trips under way at once, want at most %d", most, redis.MaxInFlight)
	}
	t.Logf("at most %d round trips under way at once", c.most.Load())
}

// A record whose value is empty (9 bytes in Redis: the header alone) is
// a record like any other: Delete removes it, and the key reads absent.
func TestDeleteEmptyValue(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	rec, swapped, err := s.CompareAndSwap(ctx, "empty", 0, []byte{}, time.Minute)
	if err != nil || !swapped {
		t.Fatalf("CompareAndSwap(empty value) = %+v, %t, %v", rec, swapped, err)
	}
	if err := s.Delete(ctx, "empty"); err != nil {
		t.Fatalf("Delete of a record with an empty value: %v", err)
	}
	if got, err := s.Get(ctx, "empty"); err != nil || got.Version != 0 {
		t.Fatalf("Get after Delete = %+v, %v; want absent", got, err)
	}
}
