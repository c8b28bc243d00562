package redis

import (
	"context"
	"errors"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluice-go/sluice/internal/pipeline"
)

// maxInFlight is how many round trips a Store keeps in flight at once
// before it holds further calls back to send them together. A call that
// finds fewer in flight goes out at once, alone, with no added wait.
//
// A few round trips in flight keep a server busy whose clients are
// mostly waiting on the network; beyond that, sending more calls at once
// costs the client and the server one write and one read per batch
// instead of per call, which is what matters once they are short of CPU.
// Measured on 2 cores with go-redis's default pool (bench/, 10,000 keys):
// 8 gave the best throughput over 16 and 64 goroutines; 2 was 20% slower
// at 16 goroutines, and 16 or more 10-35% slower at 64 (without batching
// at all: 35%).
const maxInFlight = 8

// maxBatch bounds the calls sent in one pipeline; more wait for the next.
const maxBatch = 512

// newPipeliner returns what sends the calls of a Store to the server
// (see package pipeline): each alone while few round trips are in flight,
// and otherwise queued and sent together, as one pipeline (one write, one
// read), as soon as a round trip ends. Each call is still its own command
// on its own key, so a ClusterClient or a Ring routes each to its node,
// and each caller gets exactly its own reply or error.
func newPipeliner(client goredis.UniversalClient) *pipeline.Pipeliner[*call] {
	return pipeline.New(maxInFlight, maxBatch,
		func(ctx context.Context, c *call) { _ = client.Process(ctx, c.cmder()) },
		func(ctx context.Context, calls []*call) {
			pipe := client.Pipeline()
			for _, c := range calls {
				_ = pipe.Process(ctx, c.cmder())
			}
			// Each command carries its own reply or error; when the
			// connection fails, the client gives every command without a
			// reply the error. A hook that fails the pipeline before it
			// runs gives none: a command left with neither reply nor error
			// (every reply of the scripts and every record is a non-empty
			// string) gets the pipeline's. But for a GET's nil, which
			// Exec also returns as the pipeline's, and which says that
			// replies were read: a GET that read the empty string, a value
			// sluice did not write, keeps it, to be reported corrupt. (Any
			// other error is given, a reply of the server's too: go-redis
			// returns one from a failed connection handshake, WRONGPASS
			// say, without giving it to the commands. Where a Ring mixes a
			// shard's nil with another's failed handshake, that shard's
			// calls report an empty reply: an error either way.)
			if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, goredis.Nil) {
				for _, c := range calls {
					if c.cmd.Err() == nil && c.cmd.Val() == "" {
						c.cmd.SetErr(err)
					}
				}
			}
		}).LeaveOnCancel()
}

// call is one command of a Store on its way to the server. Its arguments
// point into it, so that building the command allocates little.
type call struct {
	cmd      *goredis.StringCmd
	once     bool // the client must not send it a second time
	args     [8]any
	key      string   // the Redis key
	expected valueArg // casScript's ARGV[1], in version
	version  [8]byte
	value    valueArg // casScript's ARGV[2], the store's own copy
	ttl      int64    // casScript's ARGV[3]
}

// valueArg passes bytes to go-redis by pointer, without boxing a slice.
type valueArg struct{ b []byte }

// MarshalBinary returns the bytes as they are.
func (v *valueArg) MarshalBinary() ([]byte, error) { return v.b, nil }

// cmder returns the command as the client should process it.
func (c *call) cmder() goredis.Cmder {
	if c.once {
		return onceCmd{c.cmd}
	}
	return c.cmd
}

// onceCmd is a command the client sends at most once: a compare-and-swap
// that may have landed must not run a second time, or its own write would
// come back as a conflict.
type onceCmd struct {
	*goredis.StringCmd
}

// NoRetry tells the client not to send the command again after a failure.
func (onceCmd) NoRetry() bool { return true }
