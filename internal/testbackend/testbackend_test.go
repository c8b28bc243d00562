package testbackend

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"
)

func TestMain(m *testing.M) { Main(m) }

var namespaceRule = regexp.MustCompile(`^[a-z][a-z0-9_]{0,39}$`)

func TestNamespace(t *testing.T) {
	ns := Namespace(t)
	if !namespaceRule.MatchString(ns) {
		t.Errorf("Namespace = %q, want a match for %s", ns, namespaceRule)
	}
	if again := Namespace(t); again != ns {
		t.Errorf("second Namespace = %q, want %q as the first", again, ns)
	}
	seen := map[string]string{ns: t.Name()}
	names := []string{
		"", "x", "X", "0starts with a digit", "ÜNICODE ünïcödé 名前", "a/b/c#01",
		strings.Repeat("long name ", 20), strings.Repeat("long name ", 20), // same name twice
		"___", "UPPER_lower-Mixed.dots",
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			ns := Namespace(t)
			if !namespaceRule.MatchString(ns) {
				t.Errorf("Namespace(%q) = %q, want a match for %s", t.Name(), ns, namespaceRule)
			}
			if other, dup := seen[ns]; dup {
				t.Errorf("Namespace(%q) = %q, the same as for %q", t.Name(), ns, other)
			}
			seen[ns] = t.Name()
		})
	}
}

func TestNamespaceShape(t *testing.T) {
	for _, tc := range []struct {
		name string
		seq  uint64
		want string
	}{
		{"TestX", 1, "s" + runID + "_1_testx"},
		{"TestX/sub case#01", 36, "s" + runID + "_10_testx_sub_case_01"},
		{"Ü", 2, "s" + runID + "_2"},
		{"TestAVeryLongNameThatDoesNotFit/AtAll", 3, "s" + runID + "_3_testaverylongnamethatdoesnotfi"},
	} {
		if got := newNamespace(tc.name, tc.seq); got != tc.want {
			t.Errorf("newNamespace(%q, %d) = %q, want %q", tc.name, tc.seq, got, tc.want)
		}
	}
}

func TestNamespaceDiffersBetweenRuns(t *testing.T) {
	if a, b := newRunID(), newRunID(); a == b {
		t.Errorf("two run IDs are both %q", a)
	}
}

func TestURLsFromEnvironment(t *testing.T) {
	const redisURL = "redis://127.0.0.1:1/3"
	const pgURL = "postgres://nobody@127.0.0.1:1/nothing?sslmode=disable"
	t.Setenv(envRedisURL, redisURL)
	t.Setenv(envPostgresURL, pgURL)
	if got := RedisURL(t); got != redisURL {
		t.Errorf("RedisURL = %q, want %q from %s", got, redisURL, envRedisURL)
	}
	if got := PostgresURL(t); got != pgURL {
		t.Errorf("PostgresURL = %q, want %q from %s", got, pgURL, envPostgresURL)
	}
}

func TestNewestDebianBin(t *testing.T) {
	root := t.TempDir()
	for _, v := range []string{"9.6", "15", "16", "17"} {
		bin := filepath.Join(root, v, "bin")
		if err := os.MkdirAll(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"initdb", "postgres"} {
			if v == "17" && name == "postgres" {
				continue // incomplete: skipped
			}
			if err := os.WriteFile(filepath.Join(bin, name), nil, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.Mkdir(filepath.Join(root, "notaversion"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, want := newestDebianBin(root), filepath.Join(root, "16", "bin"); got != want {
		t.Errorf("newestDebianBin = %q, want %q", got, want)
	}
	if got := newestDebianBin(filepath.Join(root, "missing")); got != "" {
		t.Errorf("newestDebianBin(missing) = %q, want \"\"", got)
	}
}

func TestSweepDirs(t *testing.T) {
	done := exec.Command("true")
	if err := done.Run(); err != nil {
		t.Fatal(err)
	}
	dead := done.Process.Pid  // exited and reaped: no such process now
	dirs := map[string]bool{} // dir -> whether sweepDirs must keep it
	for _, tc := range []struct {
		pid  int
		keep bool
	}{{dead, false}, {os.Getpid(), true}, {os.Getppid(), true}} {
		dir, err := os.MkdirTemp("", fmt.Sprintf("%sredis-%d-", dirPrefix, tc.pid))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		dirs[dir] = tc.keep
	}
	sweepDirs()
	for dir, keep := range dirs {
		_, err := os.Stat(dir)
		if exists := err == nil; exists != keep {
			t.Errorf("after sweepDirs, %s exists = %v, want %v", dir, exists, keep)
		}
	}
}

func TestStartRedis(t *testing.T) {
	t.Parallel()
	srv := StartRedis(t, "--appendonly", "yes")
	opt, err := goredis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	opt.MaxRetries = -1 // fail at once while the server is stopped
	client := goredis.NewClient(opt)
	t.Cleanup(func() { client.Close() })
	ctx := context.Background()
	key := Namespace(t) + ":k"
	if err := client.Set(ctx, key, "v", 0).Err(); err != nil {
		t.Fatalf("SET on a fresh server: %v", err)
	}

	srv.Stop()
	if err := client.Ping(ctx).Err(); err == nil {
		t.Fatal("PING after Stop succeeded, want an error")
	}
	srv.Start()
	// appendonly yes: the key survives the restart on the same port and dir.
	got, err := client.Get(ctx, key).Result()
	if err != nil || got != "v" {
		t.Fatalf("GET after restart = %q, %v; want \"v\", nil", got, err)
	}
}

func TestStartPostgres(t *testing.T) {
	t.Parallel()
	srv := StartPostgres(t)
	ctx := context.Background()
	table := Namespace(t)
	run := func(sql string) error {
		conn, err := pgx.Connect(ctx, srv.URL())
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, sql)
		return err
	}
	if err := run("CREATE TABLE " + table + " (v int); INSERT INTO " + table + " VALUES (7)"); err != nil {
		t.Fatalf("create on a fresh server: %v", err)
	}

	srv.Stop()
	if err := run("SELECT 1"); err == nil {
		t.Fatal("query after Stop succeeded, want an error")
	}
	srv.Start()
	conn, err := pgx.Connect(ctx, srv.URL())
	if err != nil {
		t.Fatalf("connect after restart: %v", err)
	}
	defer conn.Close(ctx)
	var v int
	if err := conn.QueryRow(ctx, "SELECT v FROM "+table).Scan(&v); err != nil || v != 7 {
		t.Fatalf("row after restart = %d, %v; want 7, nil", v, err)
	}
}

// The tests below run this test binary again with another environment, to
// see what a package of tests sees on a machine set up differently.

// envChild names the check a child test binary runs instead of its tests.
const envChild = "SLUICE_TESTBACKEND_CHILD"

// TestChild is the test a child binary runs (see child); in a normal run it
// is skipped.
func TestChild(t *testing.T) {
	switch mode := os.Getenv(envChild); mode {
	case "":
		t.Skip("runs only in a child process started by the tests below")
	case "redis":
		pingRedisClient(t, RedisURL(t))
	case "postgres":
		pingPostgresClient(t, PostgresURL(t))
	case "unavailable":
		Unavailable(t, "no frobnicator: install frobnicate")
	default:
		t.Fatalf("unknown child mode %q", mode)
	}
}

func pingRedisClient(t *testing.T, url string) {
	t.Helper()
	opt, err := goredis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	client := goredis.NewClient(opt)
	defer client.Close()
	if err := client.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("PING %s: %v", url, err)
	}
}

func pingPostgresClient(t *testing.T, url string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	defer conn.Close(ctx)
	if err := conn.Ping(ctx); err != nil {
		t.Fatalf("ping %s: %v", url, err)
	}
}

// child runs this test binary in mode with env added to a clean
// environment (no SLUICE_ variables, no DOCKER_HOST) and returns its
// output and whether it passed.
func child(t *testing.T, mode string, env ...string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestChild$", "-test.v", "-test.timeout=1m")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SLUICE_") && !strings.HasPrefix(kv, "DOCKER_HOST=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, envChild+"="+mode)
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("child %s: %v\n%s", mode, ctx.Err(), out)
	}
	return string(out), err == nil
}

// emptyPath is a PATH on which nothing is found.
func emptyPath(t *testing.T) string { return "PATH=" + t.TempDir() }

func TestUnavailableSkipsOrFails(t *testing.T) {
	t.Parallel()
	out, ok := child(t, "unavailable")
	if !ok || !strings.Contains(out, "--- SKIP: TestChild") || !strings.Contains(out, "testbackend: no frobnicator: install frobnicate") {
		t.Errorf("without %s: passed %v, want a skip with the reason; output:\n%s", envRequire, ok, out)
	}
	out, ok = child(t, "unavailable", envRequire+"=1")
	if ok || !strings.Contains(out, "--- FAIL: TestChild") || !strings.Contains(out, "testbackend: no frobnicator: install frobnicate") {
		t.Errorf("with %s=1: passed %v, want a failure with the reason; output:\n%s", envRequire, ok, out)
	}
}

func TestNothingInstalled(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ mode, reason string }{
		{"redis", "install redis-server"},
		{"postgres", "install PostgreSQL"},
	} {
		out, ok := child(t, tc.mode, emptyPath(t), envNoSystem+"=1")
		if !ok || !strings.Contains(out, "--- SKIP: TestChild") || !strings.Contains(out, tc.reason) {
			t.Errorf("%s with nothing installed: passed %v, want a skip saying %q; output:\n%s", tc.mode, ok, tc.reason, out)
		}
		out, ok = child(t, tc.mode, emptyPath(t), envNoSystem+"=1", envRequire+"=1")
		if ok || !strings.Contains(out, "--- FAIL: TestChild") || !strings.Contains(out, tc.reason) {
			t.Errorf("%s with nothing installed and %s=1: passed %v, want a failure saying %q; output:\n%s", tc.mode, envRequire, ok, tc.reason, out)
		}
	}
}

func TestThrowawayServers(t *testing.T) {
	t.Parallel()
	// PATH holds only the binaries' directories, so that step 3 is what a
	// child without URLs and without Docker can use.
	redis := RedisServerPath(t)
	bin, err := postgresBin()
	if err != nil {
		Unavailable(t, "%v: %s", err, installPostgres)
	}
	path := fmt.Sprintf("PATH=%s%c%s", filepath.Dir(redis), os.PathListSeparator, bin)
	for _, tc := range []struct{ mode, source string }{
		{"redis", "testbackend: redis from a throwaway redis-server"},
		{"postgres", "testbackend: postgres from a throwaway cluster"},
	} {
		out, ok := child(t, tc.mode, path, envNoSystem+"=1", envRequire+"=1")
		if !ok || !strings.Contains(out, "--- PASS: TestChild") || !strings.Contains(out, tc.source) {
			t.Errorf("%s from binaries: passed %v, want a pass logging %q; output:\n%s", tc.mode, ok, tc.source, out)
		}
	}
}
