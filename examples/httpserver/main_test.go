package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluice-go/sluice/internal/faultstore"
	"github.com/sluice-go/sluice/internal/testbackend"
	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/memory"
)

func TestMain(m *testing.M) { testbackend.Main(m) }

// TestEndToEnd builds the server once and runs it as a subprocess on a
// free port: on every store there is, a client sees five answers 200,
// then 429s with the rate-limit fields, and SIGTERM stops it cleanly.
func TestEndToEnd(t *testing.T) {
	bin := buildServer(t)
	t.Run("stores", func(t *testing.T) { testStores(t, bin) })
	t.Run("bolt keeps limits across restart", func(t *testing.T) { testBoltRestart(t, bin) })
	t.Run("key by header, healthz not limited", func(t *testing.T) { testKeyByHeader(t, bin) })
	t.Run("dry run with -limits", func(t *testing.T) { testDryRun(t, bin) })
}

// testDryRun serves every request under -dry-run and logs the ones it
// would have denied.
func testDryRun(t *testing.T, bin string) {
	srv := startServer(t, bin, "-store", "memory", "-limits", "2/1h, 100/1d", "-dry-run")
	for i := range 4 {
		resp, err := http.Get(srv.url + "/")
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("request %d under -dry-run: status %d, want 200", i, resp.StatusCode)
		}
	}
	srv.stop(t)
	if n := strings.Count(srv.logText(), "would deny (dry run)"); n != 2 {
		t.Errorf("log has %d dry-run denials, want 2:\n%s", n, srv.logText())
	}
}

func testStores(t *testing.T, bin string) {
	stores := []struct {
		name string
		args func(t *testing.T) []string
	}{
		{"memory", func(*testing.T) []string { return nil }},
		{"bolt", func(t *testing.T) []string { return []string{"-bolt", filepath.Join(t.TempDir(), "sluice.db")} }},
		{"redis", func(t *testing.T) []string { return []string{"-redis", testbackend.RedisURL(t)} }},
		{"postgres", func(t *testing.T) []string {
			return []string{"-postgres", testbackend.PostgresURL(t), "-table", postgresTable(t)}
		}},
	}
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			args := append([]string{"-store", s.name, "-name", testbackend.Namespace(t)}, s.args(t)...)
			srv := startServer(t, bin, args...)
			burst(t, srv.url, 10*time.Second, 0, 7)
			srv.stop(t)
			if got := srv.count("msg=allowed"); got != 5 {
				t.Errorf("%d allowed lines in the log, want 5", got)
			}
			if got := srv.count("msg=denied"); got != 2 {
				t.Errorf("%d denied lines in the log, want 2", got)
			}
		})
	}
}

// testBoltRestart runs the default store twice on one file: the second
// server remembers the first one's count.
func testBoltRestart(t *testing.T, bin string) {
	args := []string{"-bolt", filepath.Join(t.TempDir(), "sluice.db"), "-period", "1h"}
	srv := startServer(t, bin, args...)
	burst(t, srv.url, time.Hour, 0, 3)
	srv.stop(t)
	srv = startServer(t, bin, args...)
	burst(t, srv.url, time.Hour, 3, 7)
	srv.stop(t)
}

func testKeyByHeader(t *testing.T, bin string) {
	srv := startServer(t, bin, "-store", "memory", "-key", "X-API-Key", "-capacity", "1")
	for i, c := range []struct {
		path, apiKey string
		status       int
	}{
		{"/healthz", "", 200}, {"/", "", 400}, {"/", "alice", 200}, {"/", "alice", 429}, {"/", "bob", 200}, {"/healthz", "", 200},
	} {
		req, err := http.NewRequest(http.MethodGet, srv.url+c.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.apiKey != "" {
			req.Header.Set("X-API-Key", c.apiKey)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("request %d (%s, key %q): status %d, want %d", i, c.path, c.apiKey, resp.StatusCode, c.status)
		}
	}
	srv.stop(t)
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-store", "etcd"},
		{"-store", "memory", "-capacity", "0"},
		{"-store", "memory", "-trust", "10.0.0.0/99"},
		{"-store", "memory", "extra"},
		{"-store", "memory", "-limits", "5/ten seconds"},
		{"-store", "memory", "-limits", "5/10s, 5/10s"},
	} {
		if err := run(context.Background(), args, io.Discard); err == nil {
			t.Errorf("run(%q) = nil, want an error", args)
		}
	}
}

// The usage asked for with -h is not an error: exit status 0, and no
// error line.
func TestHelpExitsZero(t *testing.T) {
	out, err := exec.Command(buildServer(t), "-h").CombinedOutput()
	if err != nil || strings.Contains(string(out), "help requested") || !strings.Contains(string(out), "-dry-run") {
		t.Errorf("httpserver -h: %v, output:\n%s\nwant exit status 0 and the usage alone", err, out)
	}
}

// -dry-run serves every request, also while the store fails: the failure
// is logged, not answered 503.
func TestDryRunServesDuringOutage(t *testing.T) {
	store := faultstore.New(memory.New())
	t.Cleanup(func() { store.Close() })
	lim, err := limiter.New(store, []limiter.Bucket{{Capacity: 5, Period: 10 * time.Second}}, limiter.WithDryRun())
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	h, err := newHandler(lim, options{key: "ip", dryRun: true}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	store.FailAll(storage.ErrUnavailable)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
	if w.Code != http.StatusOK {
		t.Errorf("-dry-run with the store down: status %d, want 200", w.Code)
	}
	if !strings.Contains(logs.String(), "not decided, served (dry run)") {
		t.Errorf("the store failure was not logged; log:\n%s", logs.String())
	}
}

var rateLimitRE = regexp.MustCompile(`^"default";r=(\d+);t=(\d+)$`)

// burst sends a client's requests from+1 to to and checks each answer:
// the first five are allowed, the rest denied. The bucket holds 5 tokens
// and refills one per period/5, so t and Retry-After are at most that,
// rounded up to the second, and at least 1 on a denial.
func burst(t *testing.T, url string, period time.Duration, from, to int) {
	t.Helper()
	const capacity = 5
	perToken := int((period/capacity + time.Second - 1) / time.Second)
	wantPolicy := fmt.Sprintf(`"default";q=%d;w=%d`, capacity, int(period/time.Second))
	for i := from; i < to; i++ {
		step := fmt.Sprintf("request %d", i+1)
		resp, err := http.Get(url + "/")
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		wantStatus, wantBody, wantRemaining := 200, helloBody, capacity-1-i
		if i >= capacity {
			wantStatus, wantBody, wantRemaining = 429, limitBody, 0
		}
		if resp.StatusCode != wantStatus || string(body) != wantBody {
			t.Errorf("%s: %d %q, want %d %q", step, resp.StatusCode, body, wantStatus, wantBody)
		}
		if got := resp.Header.Get("RateLimit-Policy"); got != wantPolicy {
			t.Errorf("%s: RateLimit-Policy = %q, want %q", step, got, wantPolicy)
		}
		rl := resp.Header.Get("RateLimit")
		m := rateLimitRE.FindStringSubmatch(rl)
		if m == nil || m[1] != strconv.Itoa(wantRemaining) || !inRange(m[2], 1, perToken) {
			t.Errorf("%s: RateLimit = %q, want r=%d and t in [1, %d]", step, rl, wantRemaining, perToken)
		}
		retry := resp.Header.Get("Retry-After")
		if wantStatus == 429 && !inRange(retry, 1, perToken) {
			t.Errorf("%s: Retry-After = %q, want 1 to %d seconds", step, retry, perToken)
		}
		if wantStatus == 200 && retry != "" {
			t.Errorf("%s: Retry-After = %q on an allowed request", step, retry)
		}
	}
}

func inRange(s string, lo, hi int) bool {
	n, err := strconv.Atoi(s)
	return err == nil && lo <= n && n <= hi
}

// buildServer compiles this command into a temporary directory.
func buildServer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "httpserver")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// server is a running subprocess.
type server struct {
	cmd  *exec.Cmd
	url  string
	mu   sync.Mutex
	log  []string
	done chan struct{} // closed when stderr is drained
}

var listeningRE = regexp.MustCompile(`msg=listening url=(http://127\.0\.0\.1:\d+)`)

// startServer runs bin on a free loopback port, in a temporary working
// directory, and waits until it says where it listens.
func startServer(t *testing.T, bin string, args ...string) *server {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"-addr", "127.0.0.1:0"}, args...)...)
	cmd.Dir = t.TempDir()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{cmd: cmd, done: make(chan struct{})}
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			_ = s.cmd.Process.Kill()
			_ = s.cmd.Wait()
		}
	})
	ready := make(chan string, 1)
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.log = append(s.log, line)
			s.mu.Unlock()
			if m := listeningRE.FindStringSubmatch(line); m != nil {
				ready <- m[1]
			}
		}
	}()
	select {
	case s.url = <-ready:
		return s
	case <-s.done:
		_ = cmd.Wait()
		t.Fatalf("server exited before listening:\n%s", s.logText())
	case <-time.After(15 * time.Second):
		t.Fatalf("server not listening after 15s:\n%s", s.logText())
	}
	return nil
}

// stop sends SIGTERM and requires a clean exit that closed the store.
func (s *server) stop(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() {
		<-s.done
		exited <- s.cmd.Wait()
	}()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("server exit: %v\n%s", err, s.logText())
		}
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		t.Fatalf("server still running 15s after SIGTERM:\n%s", s.logText())
	}
	if s.count("msg=stopped") != 1 {
		t.Errorf("no \"stopped\" line in the log:\n%s", s.logText())
	}
}

func (s *server) count(substr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, l := range s.log {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

func (s *server) logText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.log, "\n")
}

// postgresTable returns a table name of the test's own and drops the
// table when the test is done.
func postgresTable(t *testing.T) string {
	url := testbackend.PostgresURL(t)
	table := "httpserver_" + testbackend.Namespace(t)
	if len(table) > 63 {
		table = table[:63]
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		pool, err := pgxpool.New(ctx, url)
		if err != nil {
			t.Errorf("drop table %s: %v", table, err)
			return
		}
		defer pool.Close()
		if _, err := pool.Exec(ctx, `DROP TABLE IF EXISTS "`+table+`"`); err != nil {
			t.Errorf("drop table %s: %v", table, err)
		}
	})
	return table
}
