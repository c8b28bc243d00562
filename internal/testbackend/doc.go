// Package testbackend finds or starts the Redis and PostgreSQL servers that
// sluice's tests run against, so that one `go test ./...` works on any
// machine: against the developer's own servers, containers, throwaway
// servers started from installed binaries, or, with none of these, skips
// that say what to install.
//
// A test package that uses it calls Main from TestMain:
//
//	func TestMain(m *testing.M) { testbackend.Main(m) }
//
//	func newStore(tb testing.TB) storage.Store {
//		client := goredis.NewClient(mustParse(testbackend.RedisURL(tb)))
//		prefix := testbackend.Namespace(tb) + ":"
//		...
//	}
//
// # Where servers come from
//
// RedisURL and PostgresURL look, in this order, for:
//
//  1. the server named by SLUICE_REDIS_URL or SLUICE_POSTGRES_URL;
//  2. a container started with testcontainers-go when a Docker engine
//     answers (DOCKER_HOST, or a docker.sock in one of the usual places);
//  3. a throwaway server started from redis-server, or initdb and postgres,
//     found on PATH or (PostgreSQL) in Debian's
//     /usr/lib/postgresql/<version>/bin, the newest version first: a
//     temporary directory, a free port on 127.0.0.1, persistence or fsync
//     off;
//  4. nothing: the test is skipped with one line saying what to install or
//     set, or failed when SLUICE_REQUIRE_BACKENDS=1 (CI sets it).
//
// Steps 2 and 3 run once per test binary, on first use, and Main stops and
// removes what they started when the tests are done. Each call logs which
// step gave the server. SLUICE_TESTBACKEND_NO_SYSTEM=1 limits the search to
// PATH (no Docker, no Debian directory); it exists to check step 4 on a
// machine that has everything.
//
// StartRedis and StartPostgres give a test a server of its own, always
// from the binaries, that it can stop and start again on the same port
// over the same data, for fault and restart tests.
//
// # Isolation
//
// The servers may be shared with other tests, other packages running at
// the same time, and a developer's own data. Each test keeps to the keys,
// tables or schemas named by Namespace(tb), cleans them up, and never
// flushes or drops anything else.
//
// # Caveats
//
// PostgreSQL refuses to run as root. Under root (as in CI), the throwaway
// clusters run as the OS user "postgres", created by Debian's postgresql
// packages: the cluster's directory is handed to that user and the
// processes are started with its uid and gid. Without such a user, step 3
// reports PostgreSQL as unavailable.
//
// Servers are started with a parent-death signal, so a test binary that
// dies without reaching the end of Main (a panic, -timeout) takes its
// servers with it; their temporary directories stay behind until the next
// test binary that calls Main removes them.
package testbackend
