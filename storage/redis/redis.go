package redis

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluice-go/sluice/internal/pipeline"
	"github.com/sluice-go/sluice/internal/typednil"
	"github.com/sluice-go/sluice/storage"
)

// defaultPrefix is the key prefix used when no WithPrefix option is given.
const defaultPrefix = "sluice:"

// maxPrefixLen bounds the key prefix, so that every Redis key stays small.
const maxPrefixLen = 256

// tombstoneTTL is how long a deleted record's tombstone stays (see
// deleteScript); it only has to outlast the microsecond of the Delete.
const tombstoneTTL = time.Second

// Store is a storage.Store kept in Redis. Create it with New; it is safe
// for concurrent use by any number of goroutines, and any number of
// processes whose Stores share a server and a prefix share their records.
type Store struct {
	client  goredis.UniversalClient
	scripts onceScripter
	calls   *pipeline.Pipeliner[*call]
	prefix  string
	closed  atomic.Bool
	// getOnMaster: the client sends read-only commands to replicas
	// (ClusterOptions.ReadOnly, RouteByLatency, RouteRandomly), so Get
	// reads through the GetTimed script, which the client sends to the
	// master, instead of GET.
	getOnMaster bool
}

var _ storage.TimedStore = (*Store)(nil)

// Option configures a Store in New.
type Option func(*config)

type config struct {
	prefix string
}

// WithPrefix sets the prefix put before every key, so that the Redis key
// of limiter key k is prefix+k. The default is "sluice:"; the empty string
// means no prefix. Stores that should share their records must use the
// same prefix, and stores that should not, different ones.
//
// A prefix may hold any bytes except NUL, '{' and '}', up to 256 bytes:
// braces would make the prefix a Redis Cluster hash tag and send every key
// to one slot (see the package documentation). New rejects other
// prefixes.
func WithPrefix(prefix string) Option {
	return func(c *config) { c.prefix = prefix }
}

// New returns a Store that keeps its records in Redis through client,
// which may be a *redis.Client, *redis.ClusterClient or *redis.Ring (from
// github.com/redis/go-redis/v9). The Store never closes the client: the
// caller does, after the last call.
//
// New sends nothing to the server; it returns an error only for a nil
// client (or a nil pointer given as one) or an invalid option.
func New(client goredis.UniversalClient, opts ...Option) (*Store, error) {
	if typednil.Is(client) {
		return nil, errors.New("redis: nil client")
	}
	c := config{prefix: defaultPrefix}
	for _, opt := range opts {
		if opt != nil { // a nil Option sets nothing, as in the other drivers
			opt(&c)
		}
	}
	if err := checkPrefix(c.prefix); err != nil {
		return nil, err
	}
	cc, ok := client.(*goredis.ClusterClient)
	return &Store{client: client, scripts: onceScripter{client}, calls: newPipeliner(client), prefix: c.prefix,
		getOnMaster: ok && cc.Options().ReadOnly}, nil
}

func checkPrefix(p string) error {
	switch {
	case len(p) > maxPrefixLen:
		return fmt.Errorf("redis: prefix of %d bytes, more than %d", len(p), maxPrefixLen)
	case strings.ContainsAny(p, "{}"):
		return fmt.Errorf("redis: prefix %q contains a brace: it would be a Redis Cluster hash tag", p)
	case strings.IndexByte(p, 0) >= 0:
		return fmt.Errorf("redis: prefix %q contains NUL", p)
	}
	return nil
}

// Get returns the record stored under key with one GET command (through a
// ClusterClient that reads from replicas, one call of the GetTimed script,
// which goes to the master). An absent, expired or deleted key returns a
// Record with Version 0. A value under the key that sluice did not write
// is an error wrapping storage.ErrCorrupt.
func (s *Store) Get(ctx context.Context, key string) (storage.Record, error) {
	if s.getOnMaster {
		rec, _, err := s.GetTimed(ctx, key)
		return rec, err
	}
	if err := s.check(ctx, "get", key); err != nil {
		return storage.Record{}, err
	}
	c := &call{key: s.prefix + key}
	c.args[0], c.args[1] = "get", &c.key
	c.cmd = goredis.NewStringCmd(ctx, c.args[:2]...)
	val, err := s.run(ctx, "get", key, c)
	if errors.Is(err, goredis.Nil) {
		return storage.Record{}, nil
	}
	if err != nil {
		return storage.Record{}, err
	}
	rec, err := decodeStored(val)
	if err != nil {
		return storage.Record{}, s.corrupt("get", key, err)
	}
	return rec, nil
}

// CompareAndSwap writes value under key with the given time to live iff the
// stored version equals expected, with one script call (EVALSHA, and EVAL
// once more if the server does not know the script yet). It returns the
// record stored afterwards: the new one when swapped, the current one on
// conflict.
//
// The call is never retried by the client: when the connection fails after
// the script was sent, the write may or may not have landed, and the error
// wraps storage.ErrUnavailable. A value under the key that sluice did not
// write is left as it is, and the error wraps storage.ErrCorrupt.
func (s *Store) CompareAndSwap(ctx context.Context, key string, expected uint64, value []byte, ttl time.Duration) (storage.Record, bool, error) {
	rec, swapped, _, err := s.cas(ctx, key, expected, value, ttl, false)
	return rec, swapped, err
}

// CompareAndSwapTimed is CompareAndSwap, also returning the Redis server's
// clock (TIME, read inside the same script): storage.TimedStore, for
// limiter.WithStoreClock.
func (s *Store) CompareAndSwapTimed(ctx context.Context, key string, expected uint64, value []byte, ttl time.Duration) (storage.Record, bool, time.Time, error) {
	return s.cas(ctx, key, expected, value, ttl, true)
}

func (s *Store) cas(ctx context.Context, key string, expected uint64, value []byte, ttl time.Duration, timed bool) (storage.Record, bool, time.Time, error) {
	if err := s.check(ctx, "cas", key); err != nil {
		return storage.Record{}, false, time.Time{}, err
	}
	// The store's own copy of value: the caller may reuse its slice as
	// soon as the call returns, even while a pipeline still holds the
	// command, and a swapped record returns it.
	c := &call{
		once:  true,
		key:   s.prefix + key,
		value: valueArg{bytes.Clone(nonNil(value))},
		ttl:   millis(ttl),
	}
	c.expected.b = appendVersion(c.version[:0], expected)
	c.args = [8]any{"evalsha", casSHA, 1, &c.key, &c.expected, &c.value, &c.ttl, "t"}
	n := 7
	if timed {
		n = 8
	}
	c.cmd = goredis.NewStringCmd(ctx, c.args[:n]...)
	c.cmd.SetFirstKeyPos(3)
	reply, err := s.run(ctx, "cas", key, c)
	if err != nil {
		return storage.Record{}, false, time.Time{}, err
	}
	r, err := decodeCAS(reply, timed)
	if err != nil {
		return storage.Record{}, false, time.Time{}, fmt.Errorf("redis: cas %q: %w: %w", key, storage.ErrUnavailable, err)
	}
	switch {
	case r.foreign:
		return storage.Record{}, false, time.Time{}, s.corrupt("cas", key, errForeign)
	case r.swapped:
		return storage.Record{Value: c.value.b, Version: r.version}, true, r.now, nil
	}
	return r.current, false, r.now, nil
}

// GetTimed is Get, also returning the Redis server's clock, with one
// script call that reads the key and TIME together: storage.TimedStore,
// for limiter.WithStoreClock.
func (s *Store) GetTimed(ctx context.Context, key string) (storage.Record, time.Time, error) {
	if err := s.check(ctx, "get", key); err != nil {
		return storage.Record{}, time.Time{}, err
	}
	c := &call{key: s.prefix + key}
	c.args[0], c.args[1], c.args[2], c.args[3] = "evalsha", getSHA, 1, &c.key
	c.cmd = goredis.NewStringCmd(ctx, c.args[:4]...)
	c.cmd.SetFirstKeyPos(3)
	reply, err := s.run(ctx, "get", key, c)
	if err != nil {
		return storage.Record{}, time.Time{}, err
	}
	rec, now, err := decodeGet(reply)
	if errors.Is(err, errForeign) {
		return storage.Record{}, time.Time{}, s.corrupt("get", key, err)
	}
	if err != nil {
		return storage.Record{}, time.Time{}, fmt.Errorf("redis: get %q: %w: %w", key, storage.ErrUnavailable, err)
	}
	return rec, now, nil
}

// Hashes of the scripts that run through s.run, boxed once.
var (
	casSHA any = casScript.Hash()
	getSHA any = getScript.Hash()
)

// run sends c (see newPipeliner) and returns its reply, or the driver's error
// for op on key; a GET of an absent key returns goredis.Nil as it is. An
// EVALSHA that the server refuses with NOSCRIPT, which means it did not
// run, is sent once more as EVAL.
func (s *Store) run(ctx context.Context, op, key string, c *call) (string, error) {
	if err := s.calls.Do(ctx, c); err != nil {
		return "", s.fail(ctx, op, key, err)
	}
	reply, err := c.cmd.Result()
	if err != nil && c.args[0] == "evalsha" && goredis.HasErrorPrefix(err, "NOSCRIPT") {
		script, scripter := getScript, goredis.Scripter(s.client)
		if c.once {
			script, scripter = casScript, s.scripts
		}
		args := c.cmd.Args()[4:]
		if left := pipeline.WaitOrLeave(ctx, func() {
			reply, err = script.Eval(ctx, scripter, []string{c.key}, args...).Text()
		}); left != nil {
			return "", s.fail(ctx, op, key, left)
		}
	}
	if errors.Is(err, goredis.Nil) {
		return "", err
	}
	if err != nil {
		return "", s.fail(ctx, op, key, err)
	}
	return reply, nil
}

// Delete removes key with one script call that leaves a short-lived
// tombstone holding the deleted version (see the package documentation).
// Deleting an absent key is not an error; a value under the key that
// sluice did not write is left as it is, and the error wraps
// storage.ErrCorrupt. Like CompareAndSwap, the call is never retried by
// the client: when the connection fails after the script was sent, the
// key may or may not have been deleted, and the error wraps
// storage.ErrUnavailable.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := s.check(ctx, "delete", key); err != nil {
		return err
	}
	// Sent at most once, like a compare-and-swap: a Delete that landed and
	// lost its reply, sent again after another client wrote the key, would
	// delete that newer record and the tokens it holds.
	var reply any
	var err error
	if left := pipeline.WaitOrLeave(ctx, func() {
		reply, err = deleteScript.Run(ctx, s.scripts, []string{s.prefix + key}, millis(tombstoneTTL)).Result()
	}); left != nil {
		return s.fail(ctx, "delete", key, left)
	}
	if err != nil {
		return s.fail(ctx, "delete", key, err)
	}
	foreign, err := decodeDelete(reply)
	if err != nil {
		return fmt.Errorf("redis: delete %q: %w: %w", key, storage.ErrUnavailable, err)
	}
	if foreign {
		return s.corrupt("delete", key, errForeign)
	}
	return nil
}

// Close marks the store closed: later calls return an error wrapping
// storage.ErrClosed. It does not close the client, which belongs to the
// caller. Close is idempotent and always returns nil.
func (s *Store) Close() error {
	s.closed.Store(true)
	return nil
}

// check returns the error for a call that must not reach the server: the
// store is closed or ctx is already done (returned as it is).
func (s *Store) check(ctx context.Context, op, key string) error {
	if s.closed.Load() {
		return fmt.Errorf("redis: %s %q: %w", op, key, storage.ErrClosed)
	}
	return ctx.Err()
}

// fail turns an error of the client into the driver's error for op on key.
func (s *Store) fail(ctx context.Context, op, key string, err error) error {
	if ctxErr := contextErr(ctx); ctxErr != nil && !errors.Is(err, ctxErr) {
		// The call gave up because ctx ended, but the client reports the
		// network deadline it derived from it: keep both.
		return fmt.Errorf("redis: %s %q: %w: %w: %w", op, key, storage.ErrUnavailable, ctxErr, err)
	}
	var rerr goredis.Error
	if errors.As(err, &rerr) {
		if goredis.HasErrorPrefix(err, "WRONGTYPE") {
			return s.corrupt(op, key, err)
		}
		return fmt.Errorf("redis: %s %q: server refused %s: %w: %w", op, key, refused(op), storage.ErrUnavailable, err)
	}
	return fmt.Errorf("redis: %s %q: %w: %w", op, key, storage.ErrUnavailable, err)
}

// contextErr returns ctx.Err(), or context.DeadlineExceeded once ctx's
// deadline has passed even if its timer has not fired yet: the client's
// network deadline, derived from it, may fire first.
func contextErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

func refused(op string) string {
	if op == "get" {
		return "GET"
	}
	return "the " + op + " script"
}

// corrupt returns the error for a value under key that is not a sluice
// record.
func (s *Store) corrupt(op, key string, cause error) error {
	return fmt.Errorf("redis: %s %q: Redis key %q: %w: %w", op, key, s.prefix+key, storage.ErrCorrupt, cause)
}

// millis returns d in whole milliseconds, rounded up, at least 1.
func millis(d time.Duration) int64 {
	ms := d / time.Millisecond
	if d%time.Millisecond != 0 {
		ms++
	}
	return int64(max(ms, 1))
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// onceScripter runs EVAL and EVALSHA commands that the client does not
// retry after a network failure: a compare-and-swap that may have landed
// must not run a second time, or its own write would come back as a
// conflict, nor a Delete, which could delete a record written since. It
// sends the compare-and-swap script after NOSCRIPT (see Store.run), and
// the delete script (see Store.Delete).
type onceScripter struct {
	goredis.UniversalClient
}

// noRetryCmd is a command the client sends at most once.
type noRetryCmd struct {
	*goredis.Cmd
}

// NoRetry tells the client not to send the command again after a failure.
func (noRetryCmd) NoRetry() bool { return true }

func (c onceScripter) Eval(ctx context.Context, script string, keys []string, args ...any) *goredis.Cmd {
	return c.once(ctx, "eval", script, keys, args)
}

func (c onceScripter) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *goredis.Cmd {
	return c.once(ctx, "evalsha", sha1, keys, args)
}

func (c onceScripter) once(ctx context.Context, name, payload string, keys []string, args []any) *goredis.Cmd {
	cmdArgs := make([]any, 0, 3+len(keys)+len(args))
	cmdArgs = append(cmdArgs, name, payload, len(keys))
	for _, k := range keys {
		cmdArgs = append(cmdArgs, k)
	}
	cmdArgs = append(cmdArgs, args...)
	cmd := goredis.NewCmd(ctx, cmdArgs...)
	cmd.SetFirstKeyPos(3)
	_ = c.Process(ctx, noRetryCmd{cmd})
	return cmd
}
