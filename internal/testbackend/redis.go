package testbackend

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// installRedis says how to get a Redis server for the tests.
const installRedis = "set " + envRedisURL + "=redis://127.0.0.1:6379/0, start Docker, or install redis-server (apt-get install redis-server; brew install redis)"

// RedisServer is a throwaway redis-server owned by one test, for tests
// that stop and restart their server. It listens on 127.0.0.1 only and
// keeps its port and data directory across Stop and Start.
type RedisServer struct {
	server
}

// RedisServerPath returns the path of redis-server on PATH, or calls
// Unavailable.
func RedisServerPath(tb testing.TB) string {
	tb.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		Unavailable(tb, "no redis-server on PATH: %s", installRedis)
	}
	return path
}

// StartRedis starts a redis-server for tb alone, never the shared one, from
// the binary on PATH (or calls Unavailable), with persistence off and args
// added to its command line (such as "--appendonly", "yes"). The server is
// stopped and its directory removed when tb ends.
func StartRedis(tb testing.TB, args ...string) *RedisServer {
	tb.Helper()
	path := RedisServerPath(tb)
	return &RedisServer{startOwn(tb, "redis", func(dir string) (*process, int, error) {
		return startRedis(path, dir, args)
	})}
}

// URL returns redis://host:port/0 for the server.
func (s *RedisServer) URL() string { return "redis://" + s.Addr() + "/0" }

// startRedis starts redis-server on a free loopback port with its files in
// dir.
func startRedis(path, dir string, extra []string) (*process, int, error) {
	return startOnFreePort(func(port int) *process {
		args := []string{
			"--port", strconv.Itoa(port),
			"--bind", "127.0.0.1",
			"--dir", dir,
			"--save", "",
			"--appendonly", "no",
			"--daemonize", "no",
		}
		return &process{
			path:    path,
			args:    append(args, extra...),
			dir:     dir,
			stopSig: syscall.SIGTERM,
			ready:   func(ctx context.Context) error { return pingRedis(ctx, hostPort(port)) },
		}
	})
}

// pingRedis sends PING to addr and expects PONG.
func pingRedis(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	if _, err := conn.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line = strings.TrimSpace(line); line != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// findRedis finds or starts the Redis server shared by a test binary:
// a container, else a throwaway redis-server.
func findRedis() (url, source string, err error) {
	note := ""
	if dockerAnswers() {
		url, err := redisContainer()
		if err == nil {
			return url, "a container (testcontainers-go, " + redisImage + ")", nil
		}
		note = fmt.Sprintf(" (a Docker engine answered but the container failed: %v)", err)
	}
	path, err := exec.LookPath("redis-server")
	if err != nil {
		return "", "", fmt.Errorf("no Redis server for tests: %s%s", installRedis, note)
	}
	port, err := startShared("redis", func(dir string) (*process, int, error) {
		return startRedis(path, dir, nil)
	})
	if err != nil {
		return "", "", err
	}
	return "redis://" + hostPort(port) + "/0",
		fmt.Sprintf("a throwaway redis-server (%s) at %s%s", path, hostPort(port), note), nil
}
