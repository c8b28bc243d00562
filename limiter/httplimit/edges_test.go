package httplimit_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-go/sluice/internal/fakeclock"
	"github.com/sluice-go/sluice/internal/faultstore"
	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/limiter/httplimit"
	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/memory"
)

// TestHashedKeysRefuseEmptyKey: an empty key is answered 400 and not
// counted with WithHashedKeys as without it. Hashed, it would be a key
// like any other, and every request without one would share its bucket.
func TestHashedKeysRefuseEmptyKey(t *testing.T) {
	for _, hashed := range []bool{false, true} {
		var seen error
		opts := []httplimit.Option{
			httplimit.WithKeyFunc(func(r *http.Request) (string, error) { return r.Header.Get("X-User"), nil }),
			httplimit.WithErrorHandler(func(w http.ResponseWriter, r *http.Request, err error) {
				seen = err
				httplimit.WriteError(w, r, err)
			}),
		}
		if hashed {
			opts = append(opts, httplimit.WithHashedKeys([]byte("0123456789abcdef")))
		}
		f := setup(t, []limiter.Bucket{{Capacity: 2, Period: time.Hour}}, opts...)
		for _, remote := range []string{"192.0.2.1:1", "192.0.2.2:1", "192.0.2.3:1"} {
			w := f.do(request(remote))
			if w.Code != http.StatusBadRequest {
				t.Errorf("hashed %t: request from %s without a key: status %d, want 400", hashed, remote, w.Code)
			}
			if !errors.Is(seen, httplimit.ErrNoKey) || !errors.Is(seen, limiter.ErrInvalidKey) {
				t.Errorf("hashed %t: error handler saw %v, want ErrNoKey and limiter.ErrInvalidKey", hashed, seen)
			}
		}
		if c := f.store.Calls(); f.served != 0 || c.Get+c.CAS != 0 {
			t.Errorf("hashed %t: served %d, %d store calls; want none", hashed, f.served, c.Get+c.CAS)
		}
		if w := f.do(request("192.0.2.1:1", "X-User: 42")); w.Code != http.StatusOK {
			t.Errorf("hashed %t: request with a key: status %d, want 200", hashed, w.Code)
		}
	}
}

// TestDryRunTellsNoShortage: a request served only because the limit is
// a dry run gets the policy but no RateLimit field (nor the legacy ones),
// so its client does not slow down for a limit not enforced yet; one the
// limit allows gets the usual fields.
func TestDryRunTellsNoShortage(t *testing.T) {
	lim, err := limiter.New(memory.New(), []limiter.Bucket{{Capacity: 1, Period: 10 * time.Second}},
		limiter.WithClock(fakeclock.New(epoch)), limiter.WithDryRun())
	if err != nil {
		t.Fatal(err)
	}
	mw, err := httplimit.New(lim, httplimit.WithLegacyHeaders())
	if err != nil {
		t.Fatal(err)
	}
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) }))
	const policy = `"default";q=1;w=10`
	for i, exp := range []map[string]string{
		{httplimit.HeaderRateLimit: `"default";r=0;t=10`, httplimit.HeaderXRateLimitRemaining: "0"},
		{httplimit.HeaderRateLimit: "", httplimit.HeaderXRateLimitRemaining: "", httplimit.HeaderRetryAfter: ""},
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, request("192.0.2.1:1"))
		exp[httplimit.HeaderRateLimitPolicy] = policy
		check(t, "request "+string(rune('1'+i)), w, want{status: 200, body: "ok", headers: exp})
	}
}

// TestClientGoneIsDropped: a request whose client went away before the
// limiter decided is neither served nor answered, and not reported as a
// store failure, under either policy.
func TestClientGoneIsDropped(t *testing.T) {
	for _, failOpen := range []bool{false, true} {
		var reported, handled int
		opts := []httplimit.Option{httplimit.WithErrorHandler(func(w http.ResponseWriter, r *http.Request, err error) {
			handled++
			httplimit.WriteError(w, r, err)
		})}
		if failOpen {
			opts = append(opts, httplimit.WithFailOpen(func(*http.Request, error) { reported++ }))
		}
		f := setup(t, []limiter.Bucket{{Capacity: 5, Period: 10 * time.Second}}, opts...)
		f.store.SetLatency(time.Hour) // every store call waits for its context to end
		ctx, cancel := context.WithCancel(context.Background())
		r := request("192.0.2.1:1").WithContext(ctx)
		time.AfterFunc(10*time.Millisecond, cancel)
		w := f.do(r)
		if f.served != 0 || reported != 0 || handled != 0 {
			t.Errorf("fail open %t: served %d, reported %d, error handler called %d times; want none",
				failOpen, f.served, reported, handled)
		}
		if w.Code != http.StatusServiceUnavailable {
			t.Errorf("fail open %t: status %d, want 503 (not decided) for whoever still listens", failOpen, w.Code)
		}

		// A deadline that passes is the server's limit, not the client's
		// leaving: it is a failure to decide, handled as before.
		ctx, cancel = context.WithTimeout(context.Background(), 10*time.Millisecond)
		w = f.do(request("192.0.2.1:1").WithContext(ctx))
		cancel()
		if failOpen && (f.served != 1 || reported != 1) || !failOpen && (handled != 1 || w.Code != http.StatusServiceUnavailable) {
			t.Errorf("fail open %t, deadline passed: status %d, served %d, reported %d, handled %d",
				failOpen, w.Code, f.served, reported, handled)
		}
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Fatal(ctx.Err())
		}

		// A store that returns context.Canceled of its own, the request's
		// context still live, has failed.
		f.store.SetLatency(0)
		f.store.FailAll(context.Canceled)
		w = f.do(request("192.0.2.1:1"))
		f.store.FailAll(nil)
		if failOpen && (f.served != 2 || reported != 2) || !failOpen && (handled != 2 || w.Code != http.StatusServiceUnavailable) {
			t.Errorf("fail open %t, store returned Canceled: status %d, served %d, reported %d, handled %d",
				failOpen, w.Code, f.served, reported, handled)
		}
	}
}

// TestHeadersLegacyBindingBucket: the legacy trio describes the binding
// bucket (not the first), and X-RateLimit-Reset rounds up.
func TestHeadersLegacyBindingBucket(t *testing.T) {
	const p = `"default-3/1s";q=3;w=1, "default-2/1m";q=2;w=60`
	f := setup(t, []limiter.Bucket{{Capacity: 3, Period: time.Second}, {Capacity: 2, Period: time.Minute}},
		httplimit.WithLegacyHeaders())
	legacy := func(w want, limit, remaining, reset string) want {
		w.headers[httplimit.HeaderXRateLimitLimit] = limit
		w.headers[httplimit.HeaderXRateLimitRemaining] = remaining
		w.headers[httplimit.HeaderXRateLimitReset] = reset
		return w
	}
	run(t, f, "192.0.2.1:1", []step{
		{0, legacy(allowed(p, `"default-2/1m";r=1;t=30`), "2", "1", "30")},
		// The minute bucket is full again 59.5s from now: 60, not 59.
		{500 * time.Millisecond, legacy(allowed(p, `"default-2/1m";r=0;t=30`), "2", "0", "60")},
		{0, legacy(denied(p, `"default-2/1m";r=0;t=30`, "30"), "2", "0", "60")},
	})
}

// TestContentLengthMatchesBody: the default answers declare the length
// of the body they write; a real server cuts a body longer than declared.
func TestContentLengthMatchesBody(t *testing.T) {
	f := setup(t, []limiter.Bucket{{Capacity: 1, Period: time.Minute}},
		httplimit.WithKeyFunc(func(r *http.Request) (string, error) {
			if r.Header.Get("X-User") == "" {
				return "", errors.New("no user")
			}
			return r.Header.Get("X-User"), nil
		}))
	f.do(request("192.0.2.1:1", "X-User: u"))
	answers := map[string]func() *http.Request{
		"429": func() *http.Request { return request("192.0.2.1:1", "X-User: u") },
		"400": func() *http.Request { return request("192.0.2.1:1") },
		"503": func() *http.Request {
			f.store.FailAll(storage.ErrUnavailable)
			return request("192.0.2.1:1", "X-User: v")
		},
	}
	for _, status := range []string{"429", "400", "503"} {
		w := f.do(answers[status]())
		if strconv.Itoa(w.Code) != status {
			t.Errorf("status %d, want %s", w.Code, status)
		}
		if got, want := w.Header().Get("Content-Length"), strconv.Itoa(w.Body.Len()); got != want {
			t.Errorf("%s: Content-Length %s, body of %s bytes (%q)", status, got, want, w.Body.String())
		}
	}
	f.store.FailAll(nil)
}

// TestHashedKeysCopySecret: the secret is copied; a caller that reuses
// or clears its slice after New does not change every key.
func TestHashedKeysCopySecret(t *testing.T) {
	secret := []byte("0123456789abcdef")
	f := setup(t, []limiter.Bucket{{Capacity: 5, Period: time.Second}}, httplimit.WithHashedKeys(secret))
	before := f.do(request("192.0.2.1:1")).Header().Get("X-Test-Key")
	copy(secret, strings.Repeat("x", len(secret)))
	after := f.do(request("192.0.2.1:1")).Header().Get("X-Test-Key")
	if before == "" || before != after {
		t.Errorf("key %q before changing the caller's slice, %q after; want the same", before, after)
	}
	if c := f.store.Calls(); c == (faultstore.Counts{}) {
		t.Error("no store calls")
	}
}
