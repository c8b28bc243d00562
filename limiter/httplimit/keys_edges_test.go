package httplimit_test

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-go/sluice/internal/faultstore"
	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/limiter/httplimit"
	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/memory"
)

// TestKeysEdges: addresses a proxy or a listener may write in forms
// other than plain dotted quads (IPv4-mapped, zoned, bracketed with
// escapes), empty list elements, and trusted proxies named in IPv4-mapped
// form: each yields the client's key, as in TestKeys.
func TestKeysEdges(t *testing.T) {
	proxies := httplimit.WithTrustedProxies("10.0.0.0/8")
	fwd := httplimit.WithProxyHeader("forwarded")
	tests := []struct {
		name    string
		opts    []httplimit.Option
		remote  string
		headers []string
		key     string
	}{
		// An IPv4 client written IPv4-mapped by its proxy is an IPv4
		// client: keyed alone, not grouped with every other mapped
		// address into ::/64.
		{"IPv4-mapped hop", []httplimit.Option{proxies}, "10.0.0.1:1",
			[]string{"X-Forwarded-For: ::ffff:203.0.113.9"}, "ip:203.0.113.9"},
		{"IPv4-mapped trusted hop is skipped", []httplimit.Option{proxies}, "10.0.0.1:1",
			[]string{"X-Forwarded-For: 6.6.6.6, 203.0.113.9, ::ffff:10.0.0.2"}, "ip:203.0.113.9"},
		// A zone names the listener's interface, not the client.
		{"IPv6 zone dropped at /128", []httplimit.Option{httplimit.WithIPv6Prefix(128)}, "[fe80::1%eth0]:443", nil, "ip:fe80::1"},
		// Empty list elements are no hops (RFC 9110, section 5.6.1).
		{"empty XFF element on the right", []httplimit.Option{proxies}, "10.0.0.1:1",
			[]string{"X-Forwarded-For: 203.0.113.9,"}, "ip:203.0.113.9"},
		{"empty XFF elements between hops", []httplimit.Option{proxies}, "10.0.0.1:1",
			[]string{"X-Forwarded-For: 203.0.113.9, ,, 10.0.0.2"}, "ip:203.0.113.9"},
		{"Forwarded quoted-pair in for", []httplimit.Option{proxies, fwd}, "10.0.0.1:1",
			[]string{`Forwarded: for="20\3.0.113.9"`}, "ip:203.0.113.9"},
		// Trusted proxies named in IPv4-mapped form match the unmapped peer.
		{"trusted IPv4-mapped address", []httplimit.Option{httplimit.WithTrustedProxies("::ffff:10.0.0.1")}, "10.0.0.1:1",
			[]string{"X-Forwarded-For: 203.0.113.9"}, "ip:203.0.113.9"},
		{"trusted IPv4-mapped /96: every IPv4 peer", []httplimit.Option{httplimit.WithTrustedProxies("::ffff:0.0.0.0/96")}, "192.0.2.1:1",
			[]string{"X-Forwarded-For: 203.0.113.9"}, "ip:203.0.113.9"},
		{"trusted IPv4-mapped /108 is 172.16.0.0/12", []httplimit.Option{httplimit.WithTrustedProxies("::ffff:172.16.0.0/108")}, "172.31.255.1:1",
			[]string{"X-Forwarded-For: 203.0.113.9"}, "ip:203.0.113.9"},
		{"outside the IPv4-mapped /108", []httplimit.Option{httplimit.WithTrustedProxies("::ffff:172.16.0.0/108")}, "172.32.0.1:1",
			[]string{"X-Forwarded-For: 203.0.113.9"}, "ip:172.32.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t, []limiter.Bucket{{Capacity: 5, Period: time.Second}}, tt.opts...)
			check(t, "request", f.do(request(tt.remote, tt.headers...)), want{status: 200, headers: map[string]string{"X-Test-Key": tt.key}})
		})
	}
}

// TestNewRejectsPrefixLengths: /0 would put every client of a family in
// one bucket; New refuses it like any length out of range.
func TestNewRejectsPrefixLengths(t *testing.T) {
	store := memory.New()
	t.Cleanup(func() { _ = store.Close() })
	lim, err := limiter.New(store, []limiter.Bucket{{Capacity: 5, Period: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		opt  httplimit.Option
	}{
		{"IPv4 prefix 0", httplimit.WithIPv4Prefix(0)},
		{"IPv4 prefix -1", httplimit.WithIPv4Prefix(-1)},
		{"IPv6 prefix -1", httplimit.WithIPv6Prefix(-1)},
	} {
		if mw, err := httplimit.New(lim, tt.opt); !errors.Is(err, httplimit.ErrInvalidOption) || mw != nil {
			t.Errorf("%s: New = %v, %v; want nil and ErrInvalidOption", tt.name, mw != nil, err)
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
