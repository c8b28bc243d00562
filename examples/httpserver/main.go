// Command httpserver is a small web API that allows each client five
// requests per ten seconds, on the store of your choice:
//
//	go run ./examples/httpserver                      # bbolt file ./sluice.db
//	go run ./examples/httpserver -store memory
//	go run ./examples/httpserver -store redis -redis redis://127.0.0.1:6379/0
//	go run ./examples/httpserver -store postgres -postgres postgres://127.0.0.1:5432/app
//
// GET / answers 200 {"message": "Hello User, you have access!"} or, over
// the limit, 429 {"message": "You've reached the limit!"} with Retry-After
// and the RateLimit-Policy and RateLimit header fields. GET /healthz
// answers 200 "ok" and is not limited. Clients are keyed by IP address, or
// by a header with -key (say -key X-API-Key). -limits "5/10s, 100/h"
// combines several buckets; -dry-run serves everything and logs what it
// would have denied.
//
// It logs one line per decision to standard error, and on SIGINT or
// SIGTERM stops taking requests, finishes those in flight and closes the
// store. The default bolt store keeps the limits in a file in the working
// directory, so they survive a restart; -store memory forgets them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	goredis "github.com/redis/go-redis/v9"

	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/limiter/httplimit"
	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/bolt"
	"github.com/sluice-go/sluice/storage/memory"
	"github.com/sluice-go/sluice/storage/postgres"
	"github.com/sluice-go/sluice/storage/redis"
)

// The answers of the blog post's API.
const (
	helloBody = `{"message": "Hello User, you have access!"}` + "\n"
	limitBody = `{"message": "You've reached the limit!"}` + "\n"
)

// options are the command-line flags.
type options struct {
	addr      string
	store     string
	boltPath  string
	redisURL  string
	pgURL     string
	pgTable   string
	capacity  int64
	period    time.Duration
	limits    string
	dryRun    bool
	key       string
	name      string
	trustFrom string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		stop()
		if errors.Is(err, flag.ErrHelp) { // -h: the usage is printed
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "httpserver:", err)
		os.Exit(1)
	}
}

// parseFlags reads the command line.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("httpserver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8080", "address to listen on (port 0: any free port)")
	fs.StringVar(&o.store, "store", "bolt", "where limits are kept: memory, bolt, redis or postgres")
	fs.StringVar(&o.boltPath, "bolt", "sluice.db", "bbolt file for -store bolt")
	fs.StringVar(&o.redisURL, "redis", "redis://127.0.0.1:6379/0", "Redis URL for -store redis")
	fs.StringVar(&o.pgURL, "postgres", "postgres://127.0.0.1:5432/postgres", "PostgreSQL URL for -store postgres")
	fs.StringVar(&o.pgTable, "table", "sluice_records", "PostgreSQL table for -store postgres (created if missing)")
	fs.Int64Var(&o.capacity, "capacity", 5, "requests allowed per period (the bucket's capacity)")
	fs.DurationVar(&o.period, "period", 10*time.Second, "time for an empty bucket to refill")
	fs.StringVar(&o.limits, "limits", "", `buckets as text, such as "5/10s, 100/h"; replaces -capacity and -period`)
	fs.BoolVar(&o.dryRun, "dry-run", false, "decide and log, but serve every request (watch a limit before enforcing it)")
	fs.StringVar(&o.key, "key", "ip", `what clients are keyed by: "ip" or a header name such as X-API-Key`)
	fs.StringVar(&o.name, "name", "httpserver", "limiter name: the namespace of its keys in the store")
	fs.StringVar(&o.trustFrom, "trust", "", "comma-separated CIDRs of reverse proxies whose X-Forwarded-For is trusted")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return o, nil
}

// run serves until ctx ends, then shuts down and closes the store.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))

	store, where, closeStore, err := openStore(ctx, o)
	if err != nil {
		return err
	}
	defer closeStore()

	buckets := []limiter.Bucket{{Capacity: o.capacity, Period: o.period}}
	if o.limits != "" {
		if buckets, err = limiter.ParseBuckets(o.limits); err != nil {
			return fmt.Errorf("-limits: %w", err)
		}
	}
	limOpts := []limiter.Option{limiter.WithName(o.name)}
	if o.dryRun {
		limOpts = append(limOpts, limiter.WithDryRun())
	}
	lim, err := limiter.New(store, buckets, limOpts...)
	if err != nil {
		return err
	}
	handler, err := newHandler(lim, o, logger)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	logger.Info("listening", "url", "http://"+ln.Addr().String(), "store", where, "limits", limitsText(buckets), "dry_run", o.dryRun, "key", o.key)

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := closeStore(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	logger.Info("stopped", "store", where)
	return nil
}

// newHandler is the API behind the rate limiter.
func newHandler(lim *limiter.Limiter, o options, logger *slog.Logger) (http.Handler, error) {
	logDecision := func(r *http.Request, res httplimit.Result) {
		msg := "allowed"
		switch {
		case res.Decision.DryRun:
			msg = "would deny (dry run)"
		case !res.Decision.Allowed:
			msg = "denied"
		}
		logger.Info(msg, "method", r.Method, "path", r.URL.Path, "key", res.Key,
			"remaining", res.Decision.Remaining, "retry_after", res.Decision.RetryAfter.Round(time.Millisecond))
	}
	opts := []httplimit.Option{
		httplimit.WithSkip(func(r *http.Request) bool { return r.URL.Path == "/healthz" }),
		httplimit.WithOnDecision(logDecision),
		httplimit.WithDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusTooManyRequests, limitBody)
		})),
		httplimit.WithErrorHandler(func(w http.ResponseWriter, r *http.Request, err error) {
			logger.Error("not decided", "method", r.Method, "path", r.URL.Path, "err", err)
			httplimit.WriteError(w, r, err)
		}),
	}
	if o.key != "ip" {
		opts = append(opts, httplimit.WithKeyFunc(httplimit.KeyByHeader(o.key)))
	}
	if o.dryRun {
		// A dry run serves every request: a store failure is logged, not
		// answered 503 by the default fail-closed policy.
		opts = append(opts, httplimit.WithFailOpen(func(r *http.Request, err error) {
			logger.Error("not decided, served (dry run)", "method", r.Method, "path", r.URL.Path, "err", err)
		}))
	}
	if o.trustFrom != "" {
		opts = append(opts, httplimit.WithTrustedProxies(strings.Split(o.trustFrom, ",")...))
	}
	limit, err := httplimit.New(lim, opts...)
	if err != nil {
		return nil, err
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, helloBody)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	return limit(mux), nil
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// openStore opens the chosen store and returns it, a description for the
// log, and a function that closes it (and the client it made) once; later
// calls return nil.
func openStore(ctx context.Context, o options) (storage.Store, string, func() error, error) {
	var (
		store   storage.Store
		where   string
		closers []func() error
	)
	switch o.store {
	case "memory":
		store, where = memory.New(), "memory"
	case "bolt":
		s, err := bolt.Open(o.boltPath)
		if err != nil {
			return nil, "", nil, err
		}
		store, where = s, "bolt "+o.boltPath
	case "redis":
		opt, err := goredis.ParseURL(o.redisURL)
		if err != nil {
			return nil, "", nil, fmt.Errorf("-redis: %w", err)
		}
		client := goredis.NewClient(opt)
		closers = append(closers, client.Close)
		pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := client.Ping(pingCtx).Err(); err != nil {
			_ = client.Close()
			return nil, "", nil, fmt.Errorf("redis %s: %w", opt.Addr, err)
		}
		s, err := redis.New(client)
		if err != nil {
			_ = client.Close()
			return nil, "", nil, err
		}
		store, where = s, "redis "+opt.Addr
	case "postgres":
		pool, err := pgxpool.New(ctx, o.pgURL)
		if err != nil {
			return nil, "", nil, fmt.Errorf("-postgres: %w", err)
		}
		closers = append(closers, func() error { pool.Close(); return nil })
		newCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		s, err := postgres.New(newCtx, pool, postgres.WithTable(o.pgTable))
		if err != nil {
			pool.Close()
			return nil, "", nil, err
		}
		cfg := pool.Config().ConnConfig
		store, where = s, fmt.Sprintf("postgres %s:%d/%s table %s", cfg.Host, cfg.Port, cfg.Database, o.pgTable)
	default:
		return nil, "", nil, fmt.Errorf("-store %q: want memory, bolt, redis or postgres", o.store)
	}
	closers = append([]func() error{store.Close}, closers...)
	closed := false
	closeAll := func() error {
		if closed {
			return nil
		}
		closed = true
		var errs []error
		for _, c := range closers {
			errs = append(errs, c())
		}
		return errors.Join(errs...)
	}
	return store, where, closeAll, nil
}

// limitsText writes buckets as -limits takes them.
func limitsText(buckets []limiter.Bucket) string {
	parts := make([]string, len(buckets))
	for i, b := range buckets {
		parts[i] = b.String()
	}
	return strings.Join(parts, ", ")
}
