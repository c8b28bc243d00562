package redis_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluice-go/sluice/internal/testbackend"
	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/redis"
)

// A replica promoted by a failover before it received the key's latest
// write (replication is asynchronous) must not give the key a version it
// already had: a limiter still holding the lost record would then swap
// over a record it never read.
func TestFailoverNeverRepeatsVersions(t *testing.T) {
	ctx := t.Context()
	primary := testbackend.StartRedis(t).Addr()
	replica := testbackend.StartRedis(t).Addr()
	pc, rc := ownClient(t, primary), ownClient(t, replica)
	host, port, _ := net.SplitHostPort(primary)
	if err := rc.Do(ctx, "replicaof", host, port).Err(); err != nil {
		t.Fatal(err)
	}
	onPrimary, err := redis.New(pc)
	if err != nil {
		t.Fatal(err)
	}
	v1, _, err := onPrimary.CompareAndSwap(ctx, "k", 0, []byte("v1"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for {
		rec, err := storeOn(t, rc).Get(ctx, "k")
		if err == nil && rec.Version == v1.Version {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The replica loses its link before it gets the next write.
	if err := rc.Do(ctx, "replicaof", "no", "one").Err(); err != nil {
		t.Fatal(err)
	}
	cached, swapped, err := onPrimary.CompareAndSwap(ctx, "k", v1.Version, []byte("A"), time.Minute)
	if err != nil || !swapped {
		t.Fatal(swapped, err)
	}
	// Failover: every process now talks to the promoted replica.
	onReplica := storeOn(t, rc)
	time.Sleep(2 * time.Millisecond) // the clock moves on, as it does during a failover
	other, swapped, err := onReplica.CompareAndSwap(ctx, "k", v1.Version, []byte("B"), time.Minute)
	if err != nil || !swapped {
		t.Fatal(swapped, err)
	}
	if other.Version <= cached.Version {
		t.Errorf("after failover the key got version %#x again (had %#x, value %q, before): a different record, same version",
			other.Version, cached.Version, cached.Value)
	}
	// What goes wrong: the holder of the cached record swaps over "B",
	// which it never read.
	if _, swapped, err := onReplica.CompareAndSwap(ctx, "k", cached.Version, []byte("C"), time.Minute); err == nil && swapped {
		t.Errorf("a swap expecting the old master's version %#x replaced %q, a record it never read", cached.Version, other.Value)
	}
}

// storeOn returns a store over c with the default prefix.
func storeOn(t *testing.T, c *goredis.Client) *redis.Store {
	t.Helper()
	s, err := redis.New(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// clusterNodeID returns the node id of the server c talks to.
func clusterNodeID(t *testing.T, c *goredis.Client) string {
	id, err := c.Do(context.Background(), "cluster", "myid").Text()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// addReplica starts one more cluster node and makes it a replica of the
// master at addr.
func addReplica(t *testing.T, master string) string {
	ctx := t.Context()
	bus := freePort(t)
	srv := testbackend.StartRedis(t, "--cluster-enabled", "yes",
		"--cluster-port", strconv.Itoa(bus), "--cluster-node-timeout", "5000")
	rc := ownClient(t, srv.Addr())
	mc := ownClient(t, master)
	host, port, _ := net.SplitHostPort(srv.Addr())
	if err := mc.Do(ctx, "cluster", "meet", host, port, bus).Err(); err != nil {
		t.Fatal(err)
	}
	masterID := clusterNodeID(t, mc)
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := rc.Do(ctx, "cluster", "replicate", masterID).Err()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CLUSTER REPLICATE: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for {
		info, _ := rc.Info(ctx, "replication").Result()
		if strings.Contains(info, "master_link_status:up") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica not in sync: %s", info)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return srv.Addr()
}

// With ReadOnly (or RouteByLatency, RouteRandomly) a ClusterClient sends
// read-only commands, GET among them, to replicas: Store.Get then reads a
// record older than the one the same process just wrote.
func TestClusterReplicaReadsAreStale(t *testing.T) {
	addrs := startCluster(t)
	ctx := t.Context()
	check := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: addrs})
	defer check.Close()
	prefix := testPrefix(t)
	key := "{r}k"
	slot, err := check.ClusterKeySlot(ctx, prefix+key).Result()
	if err != nil {
		t.Fatal(err)
	}
	var master string
	shards, _ := check.ClusterSlots(ctx).Result()
	for _, sh := range shards {
		if int64(sh.Start) <= slot && slot <= int64(sh.End) {
			master = sh.Nodes[0].Addr
		}
	}
	replica := addReplica(t, master)
	client := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: addrs, ReadOnly: true, ContextTimeoutEnabled: true})
	for {
		// wait until the client's view of the slot includes the replica
		client.ReloadState(ctx)
		sh, _ := client.ClusterSlots(ctx).Result()
		n := 0
		for _, s := range sh {
			if int64(s.Start) <= slot && slot <= int64(s.End) {
				n = len(s.Nodes)
			}
		}
		if n == 2 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	s := openStore(t, client, prefix)
	rcl := ownClient(t, replica)
	before := commandCalls(t, rcl)["get"]
	stale := 0
	var rec storage.Record
	const n = 2000
	for i := range n {
		got, swapped, err := s.CompareAndSwap(ctx, key, rec.Version, []byte(fmt.Sprint(i)), time.Minute)
		if err != nil || !swapped {
			t.Fatalf("CAS %d: %v %v", i, swapped, err)
		}
		rec = got
		read, err := s.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if read.Version != rec.Version {
			stale++
		}
	}
	onReplica := commandCalls(t, rcl)["get"] - before
	t.Logf("GETs served by the replica: %d of %d; stale reads: %d", onReplica, n, stale)
	if onReplica > 0 || stale > 0 {
		t.Errorf("Store.Get read from a replica (%d GETs there) and returned %d stale records right after this process's own swap", onReplica, stale)
	}
}
