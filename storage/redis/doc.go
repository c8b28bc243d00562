// Package redis is a storage.Store kept in Redis, through
// github.com/redis/go-redis/v9: one limit shared exactly by every process
// that talks to the same server (or cluster) with the same key prefix.
//
//	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", ContextTimeoutEnabled: true})
//	store, err := sluiceredis.New(client, sluiceredis.WithPrefix("myapp:ratelimit:"))
//
// New accepts any redis.UniversalClient: a *redis.Client, a
// *redis.ClusterClient or a *redis.Ring. The store never closes the client.
// It needs Redis 5 or later (or a server that speaks its Lua scripting,
// such as Valkey).
//
// # Round trips
//
// Get is one GET command (one script call instead, through a
// ClusterClient that reads from replicas: see Replicas). CompareAndSwap
// is one Lua script (EVALSHA; the first call on a server that has not
// seen the script gets NOSCRIPT and sends it with EVAL once) that
// compares, writes the new record and sets its time to live (SET ... PX)
// in one step, and returns the current record on conflict, so that the
// limiter's retry needs no GET. Delete is one script too (see Versions).
// Every call touches exactly one key.
//
// The compare-and-swap script can also read the server's TIME and return
// it, and GetTimed reads a key and TIME in one script: the Store is a
// storage.TimedStore, so limiter.WithStoreClock decides on the Redis
// server's clock at no extra round trip.
//
// # Pipelining
//
// A Get, GetTimed or CompareAndSwap (Delete always goes alone) goes out
// at once, alone, while the store has fewer than eight round trips in
// flight; a call made while eight are in flight waits for the first of
// them to end and then goes out together with every other call that
// waited meanwhile, as one pipeline: one write and one read on one
// connection instead of one per call, for the client and for the server. Nothing waits on a timer, and a lone caller never waits at all.
// Each call in a pipeline is still its own command on its own key, so a
// ClusterClient or a Ring sends it to the node of its slot, and each
// caller gets its own reply or error. A pipeline runs until the latest
// deadline of its calls; a caller whose context ends first stops waiting
// at once, without cutting the pipeline short for the others. Pipelines
// appear in go-redis hooks (ProcessPipelineHook) as such.
//
// # Record layout
//
// The Redis key of a record is the prefix followed by the limiter's key,
// byte for byte. Its value is one Redis string:
//
//	live record:  0xF8 | version (8 bytes, big-endian) | value (the rest, possibly empty)
//	tombstone:    0xF9 | version (8 bytes, big-endian)
//
// Both tags are bytes that never occur in UTF-8, so no text or number
// stored by something else under a sluice key can pass for a record. A
// record costs 9 bytes more than its value.
//
// # Versions
//
// Every write stores max(v+1, t*4096), where v is the version of the
// key's live record or tombstone (0 if it has neither) and t the server's
// TIME in microseconds. Versions therefore grow with every write, and a
// record created after an expiry, or written on a replica promoted by a
// failover before it had received the key's latest writes (replication is
// asynchronous), starts above every version the key had, because the
// server clock has moved on since that record's last write, and a key
// cannot be written 4096 times a microsecond to run ahead of it. Delete
// does not remove the key at once: it replaces the record by a tombstone
// that keeps its version for one second, so that a write in the same
// microsecond as the Delete still gets a greater version. A tombstone
// reads as absent everywhere.
//
// The factor 4096 leaves room for 4096 writes of one key a microsecond
// before the versions run ahead of the clock, far more than a Redis server
// can run, and the versions fit in 64 bits until the year 2112.
//
// # Redis Cluster and hash tags
//
// Every call touches one key, so it always lives in one hash slot and any
// key routes correctly through a ClusterClient or a Ring; the driver adds
// no hash tag of its own. A limiter key that holds a hash tag ("{...}"
// with something between the braces) is hashed by that tag, as Redis
// always does, so keys sharing a tag share a slot and a master: that is
// correct, but a hot tag puts its load on one node. The prefix is not
// allowed to hold braces (New rejects it), because a prefix such as
// "{rl}:" would put every key of the store in one slot.
//
// # Replicas
//
// Every call goes to the master of its key. A ClusterClient made with
// ReadOnly, RouteByLatency or RouteRandomly sends read-only commands such
// as GET to replicas, which Redis updates asynchronously and which could
// return a record older than the one just written (a limiter that read
// it would, for instance, deny from the state before a Reset): through
// such a client, Get runs the script GetTimed runs, which the client
// sends to the master. Do not give a Store a client made to talk to
// replicas only (FailoverOptions.ReplicaOnly): a compare-and-swap that
// would write is refused (READONLY), but one that conflicts, and every Get
// and Delete of an absent key, is answered from the replica, whose record
// may be stale, so that a limiter would deny from an old state and fail
// only the calls it would allow.
//
// # Sharing, restarts and expiry
//
// Limits are shared by every Store on the same server or cluster with the
// same prefix, in any process. Records survive a restart of the server as
// its persistence (RDB, AOF) is configured, and are lost with a failover
// to a replica that had not received them, which gives those keys a fresh
// (full) bucket or the older state the replica had. Each record carries
// the time to live the limiter asks for (PX, rounded up to the
// millisecond); Redis removes it when it runs out, so the keyspace never
// grows without bound.
//
// Limits are exact only while every record stays where it was written.
// A server with maxmemory and an evicting policy (allkeys-*, or
// volatile-*: every sluice record has a time to live) may remove a record
// early, which reads as absent: a full bucket, so that key admits up to
// a bucket more. Use noeviction (a full server then refuses writes with
// OOM, an error wrapping storage.ErrUnavailable) or give Redis the memory
// it needs. Likewise a Ring that drops a shard it finds down sends that
// shard's keys to another shard, where they start full, and back to the
// first shard's older records when it returns.
//
// # Errors
//
// A failure of the server or the network returns an error that names the
// operation and the key and wraps both storage.ErrUnavailable and the
// cause, so errors.Is(err, storage.ErrUnavailable) works, and errors.As
// finds redis.Error for an error reply of the server; a failure of the
// network wraps what go-redis returned for it: most often a *net.OpError,
// but io.EOF for a connection the server closed during the call, and a
// timeout that matches os.ErrDeadlineExceeded for one that timed out
// (errors.Is):
//
//	redis: cas "user:42": storage: unavailable: dial tcp 127.0.0.1:6379: connect: connection refused
//	redis: cas "user:42": server refused the cas script: storage: unavailable: NOAUTH Authentication required.
//
// A server that refuses the script (NOAUTH, WRONGPASS, NOPERM for an ACL
// user without EVALSHA, READONLY on a replica, OOM, BUSY, ...) is reported
// as "server refused", with the server's own message. A compare-and-swap
// whose reply is lost after it was sent (a timeout or a broken connection)
// may or may not have been applied: it is an error wrapping
// storage.ErrUnavailable, never a guess, and the client is told not to
// send it again (a second run would report its own first write as a
// conflict). A key that holds a value sluice did not write (another type,
// or a string without the layout above) gives an error wrapping
// storage.ErrCorrupt that names the Redis key, and is never overwritten
// or deleted.
//
// A context that is done before a call returns its error as it is, and
// nothing is sent. A context that ends during a call (also while it waits
// for a pipeline) gives an error wrapping storage.ErrUnavailable and the
// context's error. A compare-and-swap in a pipeline whose connection
// fails is, like one sent alone, an error wrapping storage.ErrUnavailable,
// and the client sends no pipeline holding one again.
//
// # Caveats
//
// go-redis bounds network waits by the context's deadline only when the
// client is created with ContextTimeoutEnabled: true; otherwise by its
// ReadTimeout and WriteTimeout (3 s by default), whatever the context
// says. Set it if calls must end by their deadline. It never stops waiting
// when a context is cancelled, so the store does: a call whose context can
// end (a request's, say; not context.Background) waits for go-redis in a
// goroutine of its own, and its caller leaves as soon as the context ends,
// while the round trip runs to its end, keeping its place among the eight.
// That goroutine costs under a microsecond and two allocations per round
// trip (BenchmarkWaitOrLeave in internal/pipeline).
//
// Versions come from the clock of the server (of the master of the key's
// slot). If that clock steps back by more than the time since a key's last
// write, or a failover moves the key to a master whose clock is behind, a
// key may get a version it has had before, and a limiter that still holds
// the old record in its cache could then swap over a record it has not
// read. Keep server clocks synchronised
// (NTP slews rather than steps small errors).
//
// Keys reach Redis in plain text: hash them first if they identify people.
//
// # Concurrency
//
// A Store is safe for concurrent use by any number of goroutines; its
// atomicity against other processes comes from Redis running each script
// alone. Calls that wait for a pipeline are sent by a goroutine of the
// store, which ends as soon as none wait.
package redis
