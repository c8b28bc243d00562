package testbackend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// debianPostgres is where Debian's postgresql packages install the server
// binaries, one directory per major version: <debianPostgres>/15/bin.
const debianPostgres = "/usr/lib/postgresql"

// installPostgres says how to get a PostgreSQL server for the tests.
const installPostgres = "set " + envPostgresURL + "=postgres://user@127.0.0.1:5432/db?sslmode=disable, start Docker, or install PostgreSQL (apt-get install postgresql; initdb and postgres are looked for on PATH and in " + debianPostgres + "/<version>/bin)"

// initdbTimeout bounds the creation of a throwaway cluster.
const initdbTimeout = time.Minute

// PostgresServer is a throwaway PostgreSQL cluster owned by one test, for
// tests that stop and restart their server. It listens on 127.0.0.1 only
// (its unix socket stays in its own directory), trusts every local
// connection, runs with fsync off, and keeps its port and data across Stop
// and Start.
type PostgresServer struct {
	server
}

// StartPostgres makes a new cluster for tb alone, never the shared one,
// with initdb and postgres found on PATH or in Debian's package directory
// (or calls Unavailable), and starts it. The cluster is stopped and removed
// when tb ends.
func StartPostgres(tb testing.TB) *PostgresServer {
	tb.Helper()
	bin, err := postgresBin()
	if err != nil {
		Unavailable(tb, "%v: %s", err, installPostgres)
	}
	return &PostgresServer{startOwn(tb, "postgres", func(dir string) (*process, int, error) {
		return startPostgres(bin, dir)
	})}
}

// URL returns a URL for the server's superuser "postgres" and database
// "postgres", with sslmode=disable.
func (s *PostgresServer) URL() string { return postgresURL(s.port) }

func postgresURL(port int) string {
	return "postgres://postgres@" + hostPort(port) + "/postgres?sslmode=disable"
}

// findPostgres finds or starts the PostgreSQL server shared by a test
// binary: a container, else a throwaway cluster.
func findPostgres() (url, source string, err error) {
	note := ""
	if dockerAnswers() {
		url, err := postgresContainer()
		if err == nil {
			return url, "a container (testcontainers-go, " + postgresImage + ")", nil
		}
		note = fmt.Sprintf(" (a Docker engine answered but the container failed: %v)", err)
	}
	bin, err := postgresBin()
	if err != nil {
		return "", "", fmt.Errorf("no PostgreSQL server for tests: %v: %s%s", err, installPostgres, note)
	}
	port, err := startShared("postgres", func(dir string) (*process, int, error) {
		return startPostgres(bin, dir)
	})
	if err != nil {
		return "", "", err
	}
	return postgresURL(port), fmt.Sprintf("a throwaway cluster (%s) at %s%s", bin, hostPort(port), note), nil
}

// postgresBin returns the directory holding initdb and postgres: from PATH
// when both are there, else the newest version in Debian's directory.
func postgresBin() (string, error) {
	initdb, err1 := exec.LookPath("initdb")
	postgres, err2 := exec.LookPath("postgres")
	if err1 == nil && err2 == nil {
		if filepath.Dir(initdb) == filepath.Dir(postgres) {
			return filepath.Dir(initdb), nil
		}
		// Symbolic links in one directory may lead to the real one.
		real1, err1 := filepath.EvalSymlinks(initdb)
		real2, err2 := filepath.EvalSymlinks(postgres)
		if err1 == nil && err2 == nil && filepath.Dir(real1) == filepath.Dir(real2) {
			return filepath.Dir(real1), nil
		}
	}
	if os.Getenv(envNoSystem) != "1" {
		if dir := newestDebianBin(debianPostgres); dir != "" {
			return dir, nil
		}
	}
	return "", errors.New("no initdb and postgres on PATH")
}

// newestDebianBin returns root/<version>/bin for the highest version that
// has both initdb and postgres, or "".
func newestDebianBin(root string) string {
	entries, err := os.ReadDir(root)
	if err != nil {
		return ""
	}
	best, bestVersion := "", []int(nil)
	for _, e := range entries {
		version, ok := parseVersion(e.Name())
		if !ok {
			continue
		}
		bin := filepath.Join(root, e.Name(), "bin")
		if !isExecutable(filepath.Join(bin, "initdb")) || !isExecutable(filepath.Join(bin, "postgres")) {
			continue
		}
		if best == "" || slices.Compare(version, bestVersion) > 0 {
			best, bestVersion = bin, version
		}
	}
	return best
}

// parseVersion parses "15" or "9.6" into its numbers.
func parseVersion(s string) ([]int, bool) {
	var v []int
	for part := range strings.SplitSeq(s, ".") {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 {
			return nil, false
		}
		v = append(v, n)
	}
	return v, true
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// postgresCredential returns who the server runs as. PostgreSQL refuses to
// run as root, so under root it runs as the OS user "postgres" (which the
// Debian packages create) and dir is handed to that user; otherwise it runs
// as the current user.
func postgresCredential(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("testbackend: PostgreSQL refuses to run as root and there is no OS user \"postgres\" to run it as (useradd --system postgres): %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("testbackend: user postgres: %w", err)
	}
	if err := os.Chown(dir, int(uid), int(gid)); err != nil {
		return nil, fmt.Errorf("testbackend: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// startPostgres makes a cluster in dir/data with bin's initdb and starts
// it on a free loopback port, with its unix socket in dir.
func startPostgres(bin, dir string) (*process, int, error) {
	cred, err := postgresCredential(dir)
	if err != nil {
		return nil, 0, err
	}
	data := filepath.Join(dir, "data")
	ctx, cancel := context.WithTimeout(context.Background(), initdbTimeout)
	defer cancel()
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"),
		"--pgdata", data, "--username", "postgres", "--auth", "trust",
		"--encoding", "UTF8", "--no-locale", "--no-sync")
	initdb.Dir = dir
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, 0, fmt.Errorf("testbackend: initdb: %w: %s", err, oneLine(string(out)))
	}
	return startOnFreePort(func(port int) *process {
		return &process{
			path: filepath.Join(bin, "postgres"),
			args: []string{
				"-D", data,
				"-p", strconv.Itoa(port),
				"-c", "listen_addresses=127.0.0.1",
				"-c", "unix_socket_directories=" + dir,
				"-c", "fsync=off",
				"-c", "synchronous_commit=off",
				"-c", "full_page_writes=off",
				"-c", "max_connections=200",
			},
			dir:     dir,
			cred:    cred,
			stopSig: syscall.SIGINT,
			ready:   func(ctx context.Context) error { return pingPostgres(ctx, postgresURL(port)) },
		}
	})
}

// pingPostgres connects to url, which succeeds once the server accepts
// connections.
func pingPostgres(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}
