package httplimit_test

import (
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/limiter/httplimit"
	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/memory"
)

// Five requests per ten seconds per client IP, in front of any handler.
func Example() {
	store := memory.New()
	defer store.Close()
	lim, err := limiter.New(store, []limiter.Bucket{{Capacity: 5, Period: 10 * time.Second}})
	if err != nil {
		log.Fatal(err)
	}
	limit, err := httplimit.New(lim)
	if err != nil {
		log.Fatal(err)
	}
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello")
	})
	h := limit(hello) // or http.ListenAndServe(addr, limit(mux))

	for range 7 {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = "192.0.2.1:51234"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		fmt.Println(w.Code, w.Header().Get(httplimit.HeaderRateLimit))
		if w.Code == http.StatusTooManyRequests {
			fmt.Println("    Retry-After:", w.Header().Get(httplimit.HeaderRetryAfter))
		}
	}
	// Output:
	// 200 "default";r=4;t=2
	// 200 "default";r=3;t=2
	// 200 "default";r=2;t=2
	// 200 "default";r=1;t=2
	// 200 "default";r=0;t=2
	// 429 "default";r=0;t=2
	//     Retry-After: 2
	// 429 "default";r=0;t=2
	//     Retry-After: 2
}

// Key by an API key, and answer denials with a body of your own.
func ExampleKeyByHeader() {
	store := memory.New()
	defer store.Close()
	lim, err := limiter.New(store, []limiter.Bucket{{Capacity: 1, Period: time.Minute}}, limiter.WithName("api"))
	if err != nil {
		log.Fatal(err)
	}
	limit, err := httplimit.New(lim,
		httplimit.WithKeyFunc(httplimit.KeyByHeader("X-API-Key")),
		httplimit.WithHashedKeys([]byte("a secret from your configuration")),
		httplimit.WithDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprintln(w, `{"message": "You've reached the limit!"}`)
		})),
	)
	if err != nil {
		log.Fatal(err)
	}
	h := limit(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, `{"message": "Hello User, you have access!"}`)
	}))

	for _, apiKey := range []string{"alice", "alice", "bob", ""} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if apiKey != "" {
			r.Header.Set("X-API-Key", apiKey)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		fmt.Print(w.Code, " ", w.Body.String())
	}
	// Output:
	// 200 {"message": "Hello User, you have access!"}
	// 429 {"message": "You've reached the limit!"}
	// 200 {"message": "Hello User, you have access!"}
	// 400 {"message":"httplimit: cannot key request: missing header X-Api-Key"}
}

// Behind a reverse proxy, key by the address it forwards, and only when
// the request really comes from it.
func ExampleWithTrustedProxies() {
	store := memory.New()
	defer store.Close()
	lim, err := limiter.New(store, []limiter.Bucket{{Capacity: 10, Period: time.Minute}})
	if err != nil {
		log.Fatal(err)
	}
	limit, err := httplimit.New(lim, httplimit.WithTrustedProxies("10.0.0.0/8"))
	if err != nil {
		log.Fatal(err)
	}
	h := limit(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res, _ := httplimit.FromContext(r.Context())
		fmt.Println("keyed by", res.Key)
	}))

	for _, peer := range []string{"10.0.0.5:40000", "198.51.100.7:40000"} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = peer
		// The client wrote 6.6.6.6; the proxy appended the client's address.
		r.Header.Set("X-Forwarded-For", "6.6.6.6, 203.0.113.9")
		h.ServeHTTP(httptest.NewRecorder(), r)
	}
	// Output:
	// keyed by ip:203.0.113.9
	// keyed by ip:198.51.100.7
}

// Serve requests while the store is down, and say so.
func ExampleWithFailOpen() {
	store := memory.New()
	lim, err := limiter.New(store, []limiter.Bucket{{Capacity: 100, Period: time.Minute}})
	if err != nil {
		log.Fatal(err)
	}
	limit, err := httplimit.New(lim,
		httplimit.WithFailOpen(func(r *http.Request, err error) {
			fmt.Printf("not limited: %s %s: %v\n", r.Method, r.URL.Path, errors.Is(err, storage.ErrClosed))
		}),
		httplimit.WithSkip(func(r *http.Request) bool { return r.URL.Path == "/healthz" }),
	)
	if err != nil {
		log.Fatal(err)
	}
	h := limit(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "served")
	}))

	store.Close() // an outage
	for _, path := range []string{"/healthz", "/orders"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		fmt.Println(path, w.Code, w.Body.String())
	}
	// Output:
	// /healthz 200 served
	// not limited: GET /orders: true
	// /orders 200 served
}
