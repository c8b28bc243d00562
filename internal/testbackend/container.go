package testbackend

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
	tcredis "github.com/testcontainers/testcontainers-go/modules/redis"
)

// Container images and the time allowed to pull and start one.
const (
	redisImage       = "redis:7"
	postgresImage    = "postgres:16-alpine"
	containerTimeout = 3 * time.Minute
)

// dockerAnswers reports whether a Docker engine accepts connections, checked
// cheaply (one connect with a short timeout) so that a machine without
// Docker does not wait for testcontainers-go to find out.
func dockerAnswers() bool {
	if os.Getenv(envNoSystem) == "1" {
		return false
	}
	network, addr := "unix", ""
	switch host := os.Getenv("DOCKER_HOST"); {
	case strings.HasPrefix(host, "unix://"):
		addr = strings.TrimPrefix(host, "unix://")
	case strings.HasPrefix(host, "tcp://"):
		network, addr = "tcp", strings.TrimPrefix(host, "tcp://")
	case host != "":
		return true // another transport (ssh, npipe): let testcontainers-go try
	default:
		candidates := []string{"/var/run/docker.sock"}
		if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
			candidates = append(candidates, filepath.Join(dir, "docker.sock"))
		}
		if home, err := os.UserHomeDir(); err == nil {
			candidates = append(candidates, filepath.Join(home, ".docker", "run", "docker.sock"))
		}
		for _, c := range candidates {
			if _, err := os.Stat(c); err == nil {
				addr = c
				break
			}
		}
		if addr == "" {
			return false
		}
	}
	conn, err := net.DialTimeout(network, addr, time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// redisContainer starts the shared Redis container and returns its URL.
func redisContainer() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), containerTimeout)
	defer cancel()
	c, err := tcredis.Run(ctx, redisImage)
	if err != nil {
		terminate(c)
		return "", err
	}
	url, err := c.ConnectionString(ctx)
	if err != nil {
		terminate(c)
		return "", err
	}
	atExit(func() error { return testcontainers.TerminateContainer(c) })
	return url + "/0", nil
}

// postgresContainer starts the shared PostgreSQL container and returns its
// URL.
func postgresContainer() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), containerTimeout)
	defer cancel()
	c, err := tcpostgres.Run(ctx, postgresImage, tcpostgres.BasicWaitStrategies())
	if err != nil {
		terminate(c)
		return "", err
	}
	url, err := c.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		terminate(c)
		return "", err
	}
	atExit(func() error { return testcontainers.TerminateContainer(c) })
	return url, nil
}

// terminate removes a container that failed to start, if there is one.
func terminate(c testcontainers.Container) {
	_ = testcontainers.TerminateContainer(c) // best effort: the start error is the one to report
}
