package testbackend

import (
	"crypto/rand"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Environment variables read by this package.
const (
	envRedisURL    = "SLUICE_REDIS_URL"
	envPostgresURL = "SLUICE_POSTGRES_URL"
	envRequire     = "SLUICE_REQUIRE_BACKENDS"
	// envNoSystem limits the search to PATH: no Docker engine and no
	// Debian package directory. It exists so that the "nothing installed"
	// case can be checked on a machine that has everything.
	envNoSystem = "SLUICE_TESTBACKEND_NO_SYSTEM"
)

// The servers found or started once per test binary. This is the one
// piece of package state: a test binary shares one server of each kind
// between all its tests, and Main stops them when the tests are done.
var (
	mainCalled atomic.Bool
	redisOnce  shared
	pgOnce     shared

	stopMu sync.Mutex
	stops  []func() error // run by Main, last first
)

// shared is the outcome of finding one kind of server, computed once.
type shared struct {
	once   sync.Once
	url    string
	source string // where url came from, for the test log
	reason string // why there is no server, when url is ""
}

// get runs find once; its outcome is then in s for every caller.
func (s *shared) get(find func() (url, source string, err error)) {
	s.once.Do(func() {
		url, source, err := find()
		if err != nil {
			s.reason = oneLine(err.Error())
			return
		}
		s.url, s.source = url, source
	})
}

// Main runs the tests of a package that uses this package and then stops
// and removes every server it started for them. Call it from TestMain:
//
//	func TestMain(m *testing.M) { testbackend.Main(m) }
//
// Before the tests, it removes the directories of servers whose test
// binary died without cleaning up. Without Main, RedisURL and PostgresURL
// work only through the environment variables, and fail the test
// otherwise, so that no server outlives its test binary.
func Main(m *testing.M) {
	mainCalled.Store(true)
	sweepDirs()
	code := m.Run()
	if err := stopAll(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// atExit registers stop to run when Main returns.
func atExit(stop func() error) {
	stopMu.Lock()
	defer stopMu.Unlock()
	stops = append(stops, stop)
}

// stopAll stops what atExit registered, last first, and reports the first
// failure.
func stopAll() error {
	stopMu.Lock()
	defer stopMu.Unlock()
	var first error
	for i := len(stops) - 1; i >= 0; i-- {
		if err := stops[i](); err != nil && first == nil {
			first = err
		}
	}
	stops = nil
	return first
}

// requireMain fails tb when a server would have to be started but nothing
// would stop it again.
func requireMain(tb testing.TB) {
	tb.Helper()
	if !mainCalled.Load() {
		tb.Fatalf("testbackend: no server in %s/%s and TestMain does not call testbackend.Main, which is needed to start one: add func TestMain(m *testing.M) { testbackend.Main(m) }",
			envRedisURL, envPostgresURL)
	}
}

// RedisURL returns the URL of a Redis server for tb, such as
// redis://127.0.0.1:6379/0. The server is, in this order: the one named by
// SLUICE_REDIS_URL; a container started through testcontainers-go when a
// Docker engine answers; a throwaway redis-server from PATH. The last two
// are started once per test binary, on first use, and stopped by Main.
// When there is none, RedisURL calls Unavailable. The test log says which
// server was used.
//
// The server may be shared with other tests and other people: keep to the
// keys under Namespace(tb) and never flush it.
func RedisURL(tb testing.TB) string {
	tb.Helper()
	return sharedURL(tb, "redis", envRedisURL, &redisOnce, findRedis)
}

// PostgresURL returns the URL of a PostgreSQL server for tb, such as
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable. The server
// is, in this order: the one named by SLUICE_POSTGRES_URL; a container
// started through testcontainers-go when a Docker engine answers; a
// throwaway cluster made with initdb and postgres found on PATH or in
// Debian's /usr/lib/postgresql/<version>/bin (the newest). The last two are
// started once per test binary, on first use, and stopped by Main. When
// there is none, PostgresURL calls Unavailable. The test log says which
// server was used.
//
// The server may be shared with other tests and other people: create
// tables or schemas named after Namespace(tb) and drop only those.
func PostgresURL(tb testing.TB) string {
	tb.Helper()
	return sharedURL(tb, "postgres", envPostgresURL, &pgOnce, findPostgres)
}

// sharedURL returns the URL in env, or else the one of the shared server
// that find finds or starts once, or calls Unavailable.
func sharedURL(tb testing.TB, kind, env string, s *shared, find func() (url, source string, err error)) string {
	tb.Helper()
	if url := os.Getenv(env); url != "" {
		tb.Logf("testbackend: %s from %s", kind, env)
		return url
	}
	requireMain(tb)
	s.get(find)
	if s.url == "" {
		Unavailable(tb, "%s", s.reason)
	}
	tb.Logf("testbackend: %s from %s", kind, s.source)
	return s.url
}

// Unavailable ends tb because a backend it needs is missing: it skips tb
// with the reason, or fails it when SLUICE_REQUIRE_BACKENDS=1 (as CI sets
// it, so that a missing server can never pass as a skip). The reason should
// say in one line what to install or set.
func Unavailable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := "testbackend: " + fmt.Sprintf(format, args...)
	if os.Getenv(envRequire) == "1" {
		tb.Fatalf("%s (failing, not skipping, because %s=1)", msg, envRequire)
	}
	tb.Skip(msg)
}

// Namespace limits.
const (
	namespaceMax = 40
	runIDLen     = 6
)

var (
	runID      = newRunID()
	namespaces sync.Map // testing.TB -> string
	nsSeq      atomic.Uint64
)

// newRunID returns runIDLen random characters from [a-z0-9], different in
// every test binary run.
func newRunID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, runIDLen)
	rand.Read(b) // never fails: it crashes the program instead
	for i, c := range b {
		b[i] = alphabet[int(c)%len(alphabet)]
	}
	return string(b)
}

// Namespace returns a name for tb's keys, tables or schemas: unique to tb
// within this run and across runs and processes, made of [a-z0-9_],
// starting with a letter, at most 40 characters. It holds a readable part
// of tb.Name() for whoever looks into the server. Calls with the same tb
// return the same name.
func Namespace(tb testing.TB) string {
	if ns, ok := namespaces.Load(tb); ok {
		return ns.(string)
	}
	ns := newNamespace(tb.Name(), nsSeq.Add(1))
	got, _ := namespaces.LoadOrStore(tb, ns)
	return got.(string)
}

// newNamespace builds "s<runID>_<seq>_<name>": the run ID and the sequence
// number make it unique, the name is there for people.
func newNamespace(name string, seq uint64) string {
	ns := "s" + runID + "_" + strconv.FormatUint(seq, 36) + "_"
	var b strings.Builder
	underscore := false
	for _, r := range strings.ToLower(name) {
		if b.Len()+len(ns) >= namespaceMax {
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
			underscore = false
		case !underscore && b.Len() > 0:
			b.WriteByte('_')
			underscore = true
		}
	}
	return strings.TrimRight(ns+b.String(), "_")
}

// oneLine joins the lines of s so that a reason fits on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
