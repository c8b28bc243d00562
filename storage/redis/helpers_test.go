package redis_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluice-go/sluice/internal/testbackend"
)

// startCluster starts three redis-server masters on loopback ports, joins
// them into one Redis Cluster with the hash slots split in three, waits
// until every node reports cluster_state:ok, and returns their addresses.
// The servers stop when t ends.
func startCluster(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command(testbackend.RedisServerPath(t), "--version").Output()
	if err != nil {
		t.Fatalf("redis-server --version: %v", err)
	}
	// "Redis server v=7.0.15 sha=..."; CLUSTER ADDSLOTSRANGE and
	// --cluster-port are new in 7.0.
	_, v, _ := strings.Cut(string(out), "v=")
	major, _, _ := strings.Cut(v, ".")
	if n, err := strconv.Atoi(major); err != nil || n < 7 {
		testbackend.Unavailable(t, "the cluster test needs redis-server 7.0 or later, found %s", strings.TrimSpace(string(out)))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ranges := [][2]int{{0, 5460}, {5461, 10922}, {10923, 16383}}
	var (
		addrs    []string
		busPorts []int
		clients  []*goredis.Client
	)
	for range ranges {
		// The cluster bus listens on port+10000 unless told otherwise,
		// which may be taken or above 65535: give it a free port.
		bus := freePort(t)
		srv := testbackend.StartRedis(t, "--cluster-enabled", "yes",
			"--cluster-port", strconv.Itoa(bus), "--cluster-node-timeout", "5000")
		c := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
		t.Cleanup(func() { c.Close() })
		addrs = append(addrs, srv.Addr())
		busPorts = append(busPorts, bus)
		clients = append(clients, c)
	}
	for i, c := range clients {
		if i > 0 {
			host, port, _ := net.SplitHostPort(addrs[i])
			if err := clients[0].Do(ctx, "cluster", "meet", host, port, busPorts[i]).Err(); err != nil {
				t.Fatalf("CLUSTER MEET %s: %v", addrs[i], err)
			}
		}
		r := ranges[i]
		if err := c.Do(ctx, "cluster", "addslotsrange", r[0], r[1]).Err(); err != nil {
			t.Fatalf("CLUSTER ADDSLOTSRANGE %d %d on %s: %v", r[0], r[1], addrs[i], err)
		}
	}
	for _, c := range clients {
		for {
			info, err := c.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") &&
				strings.Contains(info, "cluster_known_nodes:3") && strings.Contains(info, "cluster_slots_ok:16384") {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("cluster not ready after 30s: %v\n%s", err, info)
			case <-time.After(50 * time.Millisecond): // polling a real server
			}
		}
	}
	return addrs
}

// freePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// commandCalls returns the calls counted in INFO commandstats by command
// name (lower case), such as "evalsha" and "get".
func commandCalls(t *testing.T, c *goredis.Client) map[string]int64 {
	t.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatalf("INFO commandstats: %v", err)
	}
	calls := map[string]int64{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		for _, field := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(field, "calls="); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					t.Fatalf("INFO commandstats: %q", line)
				}
				calls[strings.TrimPrefix(name, "cmdstat_")] = n
			}
		}
	}
	return calls
}

// Modes of a proxy for the replies of the server.
const (
	passReplies     = iota // forward them
	cutReplies             // close the connection of the next reply instead: the request ran, its reply is lost
	holdReplies            // drop them and keep the connection open: the server seems hung
	cutSecondReply         // forward the next reply, then cut as cutReplies
	holdSecondReply        // forward the next reply, then hold as holdReplies
)

// proxy forwards TCP connections to a Redis server and can lose or hold
// back the replies, to make writes whose outcome the client cannot know.
type proxy struct {
	ln     net.Listener
	target string
	mode   atomic.Int32
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns []net.Conn
}

// startProxy starts a proxy to target on a loopback port; it stops when t
// ends.
func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Go(p.serve)
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		p.wg.Go(func() {
			_, _ = io.Copy(u, c)
			u.Close()
		})
		p.wg.Go(func() { p.replies(c, u) })
	}
}

// replies copies the server's replies on u to the client on c, as the
// mode says.
func (p *proxy) replies(c, u net.Conn) {
	defer c.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := u.Read(buf)
		if n > 0 {
			if p.mode.CompareAndSwap(cutReplies, passReplies) {
				u.Close() // once: a client's retry would get through
				return
			}
			if p.mode.CompareAndSwap(cutSecondReply, cutReplies) || p.mode.CompareAndSwap(holdSecondReply, holdReplies) {
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
				continue
			}
			switch p.mode.Load() {
			case passReplies:
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// gate is a go-redis hook that holds commands back until released, so
// that a test can fill the round trips a Store keeps in flight and make
// it queue the calls that follow, and that records the pipelines sent.
type gate struct {
	holdSingle   atomic.Bool // hold single EVALSHA commands
	failSingle   atomic.Bool // and fail them once released, unsent
	holdPipes    atomic.Bool // hold pipelines
	failPipes    atomic.Bool // fail pipelines, unsent, without giving their commands the error
	arrived      chan struct{}
	release      chan struct{} // closed to release the single commands
	releasePipes chan struct{} // closed to release the pipelines

	mu        sync.Mutex
	pipelines []int // the commands of each pipeline sent
}

var errHeldBack = errors.New("test: held back by the gate")

func newGate() *gate {
	return &gate{arrived: make(chan struct{}, 1024), release: make(chan struct{}), releasePipes: make(chan struct{})}
}

func (g *gate) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (g *gate) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		if g.holdSingle.Load() && cmd.Name() == "evalsha" {
			g.arrived <- struct{}{}
			<-g.release
			if g.failSingle.Load() {
				cmd.SetErr(errHeldBack)
				return errHeldBack
			}
		}
		return next(ctx, cmd)
	}
}

func (g *gate) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		if name := cmds[0].Name(); name != "evalsha" && name != "get" {
			// A connection's handshake (HELLO, CLIENT SETINFO), or the
			// test's own warm-up.
			return next(ctx, cmds)
		}
		g.mu.Lock()
		g.pipelines = append(g.pipelines, len(cmds))
		g.mu.Unlock()
		if g.holdPipes.Load() {
			g.arrived <- struct{}{}
			<-g.releasePipes
		}
		if g.failPipes.Load() {
			return errHeldBack
		}
		return next(ctx, cmds)
	}
}

// wait waits until n commands or pipelines have arrived at the gate.
func (g *gate) wait(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-g.arrived:
		case <-time.After(10 * time.Second):
			t.Fatal("nothing arrived at the gate in 10s")
		}
	}
}

// sent returns the sizes of the pipelines sent so far.
func (g *gate) sent() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.pipelines)
}
