package testbackend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bounds for a server process.
const (
	readyTimeout = 30 * time.Second // from exec to answering
	stopTimeout  = 30 * time.Second // from the stop signal to exit, then SIGKILL
	pollEvery    = 20 * time.Millisecond
)

// process is a server that can be stopped and started again with the same
// command line, so on the same port and over the same data.
type process struct {
	path    string
	args    []string
	dir     string              // working directory; holds the log file
	cred    *syscall.Credential // run as another user (PostgreSQL under root), or nil
	stopSig syscall.Signal
	ready   func(ctx context.Context) error // nil once the server answers

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// logPath is where the server's output goes, appended across restarts.
func (p *process) logPath() string { return filepath.Join(p.dir, "server.log") }

// start runs the server and waits until it answers.
func (p *process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("testbackend: %s is already running", filepath.Base(p.path))
	}
	log, err := os.OpenFile(p.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("testbackend: %w", err)
	}
	cmd := exec.Command(p.path, p.args...)
	cmd.Dir = p.dir
	cmd.Stdout, cmd.Stderr = log, log
	// Pdeathsig kills the server if the test binary dies without running
	// Main's cleanup (a panic, a -timeout, a kill).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: p.cred}
	err = cmd.Start()
	log.Close() // the child holds its own copy
	if err != nil {
		return fmt.Errorf("testbackend: start %s: %w", p.path, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the exit status of a server we stop means nothing
		close(done)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		lastErr := p.ready(ctx)
		if lastErr == nil {
			p.cmd, p.done = cmd, done
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("testbackend: %s exited at start: %s", filepath.Base(p.path), p.logTail())
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("testbackend: %s did not answer within %v: %w; log: %s",
				filepath.Base(p.path), readyTimeout, lastErr, p.logTail())
		case <-tick.C:
		}
	}
}

// stop ends the server with its clean shutdown signal and waits for it to
// exit; a server that has not exited after stopTimeout is killed. Stopping
// a stopped server does nothing.
func (p *process) stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return nil
	}
	cmd, done := p.cmd, p.done
	p.cmd, p.done = nil, nil
	if err := cmd.Process.Signal(p.stopSig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("testbackend: stop %s: %w", filepath.Base(p.path), err)
	}
	select {
	case <-done:
		return nil
	case <-time.After(stopTimeout):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("testbackend: %s did not stop within %v and was killed", filepath.Base(p.path), stopTimeout)
	}
}

// logTail returns the end of the server's log on one line.
func (p *process) logTail() string {
	b, err := os.ReadFile(p.logPath())
	if err != nil {
		return err.Error()
	}
	const max = 600
	b = bytes.TrimSpace(b)
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return oneLine(string(b))
}

// freePort returns a loopback TCP port that nothing listens on right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("testbackend: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startOnFreePort picks a free port, builds the process for it and starts
// it, trying a few ports in case another program takes the one picked
// between the check and the server's bind.
func startOnFreePort(newProcess func(port int) *process) (*process, int, error) {
	var err error
	for range 3 {
		var port int
		port, err = freePort()
		if err != nil {
			return nil, 0, err
		}
		p := newProcess(port)
		if err = p.start(); err == nil {
			return p, port, nil
		}
	}
	return nil, 0, err
}

// hostPort is "127.0.0.1:port".
func hostPort(port int) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// server is a throwaway server owned by one test: RedisServer and
// PostgresServer are this with their URL.
type server struct {
	tb   testing.TB
	port int
	proc *process
}

// startOwn starts a server for tb with start in a new temporary directory,
// and stops it and removes the directory when tb ends.
func startOwn(tb testing.TB, what string, start func(dir string) (*process, int, error)) server {
	tb.Helper()
	dir, err := makeDir(what)
	if err != nil {
		tb.Fatalf("testbackend: %v", err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	proc, port, err := start(dir)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(func() {
		if err := proc.stop(); err != nil {
			tb.Errorf("%v", err)
		}
	})
	s := server{tb: tb, port: port, proc: proc}
	tb.Logf("testbackend: own %s (%s) at %s", what, proc.path, s.Addr())
	return s
}

// startShared starts the server shared by a test binary with start in a
// new temporary directory, and has Main stop it and remove the directory.
func startShared(what string, start func(dir string) (*process, int, error)) (port int, err error) {
	dir, err := makeDir(what)
	if err != nil {
		return 0, fmt.Errorf("testbackend: %w", err)
	}
	proc, port, err := start(dir)
	if err != nil {
		os.RemoveAll(dir)
		return 0, err
	}
	atExit(func() error {
		err := proc.stop()
		os.RemoveAll(dir)
		return err
	})
	return port, nil
}

// Addr returns the server's host:port on 127.0.0.1.
func (s *server) Addr() string { return hostPort(s.port) }

// Stop shuts the server down cleanly (redis-server: SIGTERM; postgres:
// SIGINT, a fast shutdown) and waits for it to exit; it fails the test if
// it cannot. Stopping a stopped server does nothing.
func (s *server) Stop() {
	s.tb.Helper()
	if err := s.proc.stop(); err != nil {
		s.tb.Fatalf("%v", err)
	}
}

// Start starts the stopped server again on the same port over the same
// data and waits until it answers; it fails the test if it cannot.
func (s *server) Start() {
	s.tb.Helper()
	if err := s.proc.start(); err != nil {
		s.tb.Fatalf("%v", err)
	}
}

// makeDir makes a temporary directory for a server. Its name holds the
// process ID of this test binary, so that sweepDirs can tell whose it is.
func makeDir(what string) (string, error) {
	return os.MkdirTemp("", fmt.Sprintf("%s%s-%d-", dirPrefix, what, os.Getpid()))
}

// dirPrefix starts the name of every directory made by makeDir.
const dirPrefix = "sluice-testbackend-"

// sweepDirs removes the directories that makeDir made for test binaries
// that are gone without cleaning up (killed, or ended by a panic).
func sweepDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, dir := range dirs {
		parts := strings.Split(strings.TrimPrefix(filepath.Base(dir), dirPrefix), "-")
		if len(parts) != 3 {
			continue
		}
		pid, err := strconv.Atoi(parts[1])
		if err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(dir)
		}
	}
}
