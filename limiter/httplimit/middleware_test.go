package httplimit_test

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
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

// fixture is a limited handler on a manual clock and a store that can be
// made to fail. The inner handler answers 200 "ok" and echoes the key the
// middleware decided with in X-Test-Key.
type fixture struct {
	clock  *fakeclock.Clock
	store  *faultstore.Store
	h      http.Handler
	served int
}

var epoch = time.Unix(1_800_000_000, 0)

func setup(t *testing.T, buckets []limiter.Bucket, opts ...httplimit.Option) *fixture {
	t.Helper()
	f := &fixture{clock: fakeclock.New(epoch), store: faultstore.New(memory.New())}
	t.Cleanup(func() { _ = f.store.Close() })
	lim, err := limiter.New(f.store, buckets, limiter.WithClock(f.clock))
	if err != nil {
		t.Fatal(err)
	}
	mw, err := httplimit.New(lim, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f.h = mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.served++
		if res, ok := httplimit.FromContext(r.Context()); ok {
			w.Header().Set("X-Test-Key", res.Key)
		}
		_, _ = w.Write([]byte("ok"))
	}))
	return f
}

// request is a GET / from remote with headers given as "Name: value".
func request(remote string, headers ...string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr = remote
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ":")
		r.Header.Add(name, strings.TrimSpace(value))
	}
	return r
}

func (f *fixture) do(r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return w
}

// want is the expected answer: status, the named headers exactly ("" =
// absent), and the body when not empty.
type want struct {
	status  int
	headers map[string]string
	body    string
}

func check(t *testing.T, step string, w *httptest.ResponseRecorder, exp want) {
	t.Helper()
	if got := w.Code; got != exp.status {
		t.Errorf("%s: status = %d, want %d (body %q)", step, got, exp.status, w.Body.String())
	}
	for name, v := range exp.headers {
		if got := w.Header().Get(name); got != v {
			t.Errorf("%s: %s = %q, want %q", step, name, got, v)
		}
		if n := len(w.Header().Values(name)); v != "" && n != 1 {
			t.Errorf("%s: %d %s fields, want 1", step, n, name)
		}
	}
	if exp.body != "" && w.Body.String() != exp.body {
		t.Errorf("%s: body = %q, want %q", step, w.Body.String(), exp.body)
	}
}

func allowed(policy, rl string) want {
	return want{status: 200, body: "ok", headers: map[string]string{
		httplimit.HeaderRateLimitPolicy: policy,
		httplimit.HeaderRateLimit:       rl,
		httplimit.HeaderRetryAfter:      "",
	}}
}

func denied(policy, rl, retry string) want {
	return want{
		status: 429,
		body:   `{"message":"rate limit exceeded, retry in ` + retry + ` s"}` + "\n",
		headers: map[string]string{
			httplimit.HeaderRateLimitPolicy: policy,
			httplimit.HeaderRateLimit:       rl,
			httplimit.HeaderRetryAfter:      retry,
			"Content-Type":                  "application/json",
		},
	}
}

// step is one request after advancing the clock.
type step struct {
	advance time.Duration
	want    want
}

func run(t *testing.T, f *fixture, remote string, steps []step) {
	t.Helper()
	for i, s := range steps {
		f.clock.Advance(s.advance)
		check(t, fmt.Sprintf("step %d (+%v)", i, s.advance), f.do(request(remote)), s.want)
	}
}

func TestHeadersExact(t *testing.T) {
	const p = `"default";q=5;w=10`
	f := setup(t, []limiter.Bucket{{Capacity: 5, Period: 10 * time.Second}})
	run(t, f, "192.0.2.1:1234", []step{
		{0, allowed(p, `"default";r=4;t=2`)},
		{0, allowed(p, `"default";r=3;t=2`)},
		{0, allowed(p, `"default";r=2;t=2`)},
		{0, allowed(p, `"default";r=1;t=2`)},
		{0, allowed(p, `"default";r=0;t=2`)},
		{0, denied(p, `"default";r=0;t=2`, "2")},
		{0, denied(p, `"default";r=0;t=2`, "2")},
		// Retry-After and t round up: 1s, then 1ms, then 1s+1ns are left.
		{time.Second, denied(p, `"default";r=0;t=1`, "1")},
		{999 * time.Millisecond, denied(p, `"default";r=0;t=1`, "1")},
		{time.Millisecond, allowed(p, `"default";r=0;t=2`)},
		{time.Second - time.Nanosecond, denied(p, `"default";r=0;t=2`, "2")},
		// A full bucket again after the period.
		{time.Hour, allowed(p, `"default";r=4;t=2`)},
	})
	if f.served != 7 {
		t.Errorf("handler served %d requests, want 7", f.served)
	}
}

func TestHeadersLegacy(t *testing.T) {
	const p = `"login";q=3;w=60`
	f := setup(t, []limiter.Bucket{{Capacity: 3, Period: time.Minute}},
		httplimit.WithLegacyHeaders(), httplimit.WithPolicyName("login"))
	legacy := func(w want, remaining, reset string) want {
		w.headers[httplimit.HeaderXRateLimitLimit] = "3"
		w.headers[httplimit.HeaderXRateLimitRemaining] = remaining
		w.headers[httplimit.HeaderXRateLimitReset] = reset
		return w
	}
	run(t, f, "192.0.2.1:1", []step{
		{0, legacy(allowed(p, `"login";r=2;t=20`), "2", "20")},
		{0, legacy(allowed(p, `"login";r=1;t=20`), "1", "40")},
		{0, legacy(allowed(p, `"login";r=0;t=20`), "0", "60")},
		{5 * time.Second, legacy(denied(p, `"login";r=0;t=15`, "15"), "0", "55")},
	})
}

func TestHeadersSeveralBuckets(t *testing.T) {
	const p = `"default-2/1s";q=2;w=1, "default-5/1h";q=5;w=3600`
	f := setup(t, []limiter.Bucket{{Capacity: 5, Period: time.Hour}, {Capacity: 2, Period: time.Second}})
	run(t, f, "192.0.2.1:1", []step{
		{0, allowed(p, `"default-2/1s";r=1;t=1`)},
		{0, allowed(p, `"default-2/1s";r=0;t=1`)},
		{0, denied(p, `"default-2/1s";r=0;t=1`, "1")},
		{time.Second, allowed(p, `"default-2/1s";r=1;t=1`)},
		{0, allowed(p, `"default-2/1s";r=0;t=1`)},
		// The hour bucket now binds: 5 taken over 2s, its next token 720s-2s away.
		{time.Second, allowed(p, `"default-5/1h";r=0;t=718`)},
		{0, denied(p, `"default-5/1h";r=0;t=718`, "718")},
	})
}

// A wait of whole seconds exactly: t is not a second long, and equals
// Retry-After, which the next request honours.
func TestHeadersWholeSecondWait(t *testing.T) {
	const p = `"default";q=3;w=10`
	f := setup(t, []limiter.Bucket{{Capacity: 3, Period: 10 * time.Second}})
	run(t, f, "192.0.2.1:1", []step{
		{0, allowed(p, `"default";r=2;t=4`)},
		{0, allowed(p, `"default";r=1;t=4`)},
		{0, allowed(p, `"default";r=0;t=4`)},
		{7 * time.Second, allowed(p, `"default";r=1;t=3`)},
		{0, allowed(p, `"default";r=0;t=3`)},
		{0, denied(p, `"default";r=0;t=3`, "3")},
		{3 * time.Second, allowed(p, `"default";r=0;t=4`)},
	})
}

// When the bucket named (the fewest tokens, the slower on a tie) is not
// the one holding a cost-1 request back, t still says when it can pass.
func TestHeadersDeniedByOtherBucket(t *testing.T) {
	const p = `"default-1/11s";q=1;w=11, "default-2/35s";q=2;w=35`
	f := setup(t, []limiter.Bucket{{Capacity: 1, Period: 11 * time.Second}, {Capacity: 2, Period: 35 * time.Second}})
	run(t, f, "192.0.2.1:1", []step{
		{0, allowed(p, `"default-1/11s";r=0;t=11`)},
		{11 * time.Second, allowed(p, `"default-2/35s";r=0;t=7`)},
		{0, denied(p, `"default-2/35s";r=0;t=11`, "11")},
		{11 * time.Second, allowed(p, `"default-2/35s";r=0;t=13`)},
	})
}

func TestHeadersSameCapacityNamesSlowerBucket(t *testing.T) {
	const p = `"default-2/10s";q=2;w=10, "default-2/1m";q=2;w=60`
	f := setup(t, []limiter.Bucket{{Capacity: 2, Period: 10 * time.Second}, {Capacity: 2, Period: time.Minute}})
	run(t, f, "192.0.2.1:1", []step{
		{0, allowed(p, `"default-2/1m";r=1;t=30`)},
		{0, allowed(p, `"default-2/1m";r=0;t=30`)},
		{10 * time.Second, denied(p, `"default-2/1m";r=0;t=20`, "20")},
	})
}

func TestHeadersSubSecondPeriod(t *testing.T) {
	const p = `"default";q=10;w=1`
	f := setup(t, []limiter.Bucket{{Capacity: 10, Period: 100 * time.Millisecond}})
	run(t, f, "192.0.2.1:1", []step{{0, allowed(p, `"default";r=9;t=1`)}})
}

func TestHeadersLargestBucket(t *testing.T) {
	p := fmt.Sprintf(`"default";q=%d;w=%d`, int64(limiter.MaxCapacity), int64(limiter.MaxPeriod/time.Second))
	f := setup(t, []limiter.Bucket{{Capacity: limiter.MaxCapacity, Period: limiter.MaxPeriod}}, httplimit.WithCost(limiter.MaxCapacity))
	run(t, f, "192.0.2.1:1", []step{
		{0, allowed(p, `"default";r=0;t=1`)},
		// The next token is ~287µs away, but the cost is the whole bucket.
		{0, denied(p, `"default";r=0;t=1`, "315576000")},
	})
}

func TestDefaultKeyIgnoresForwardingHeaders(t *testing.T) {
	f := setup(t, []limiter.Bucket{{Capacity: 1, Period: time.Minute}})
	// A client that writes its own X-Forwarded-For or Forwarded header
	// gets no new bucket from it.
	for i, r := range []*http.Request{
		request("192.0.2.1:1000", "X-Forwarded-For: 203.0.113.1"),
		request("192.0.2.1:1001", "X-Forwarded-For: 203.0.113.2"),
		request("192.0.2.1:1002", "Forwarded: for=203.0.113.3"),
	} {
		w := f.do(r)
		wantStatus := 429
		if i == 0 {
			wantStatus = 200
			if got := w.Header().Get("X-Test-Key"); got != "ip:192.0.2.1" {
				t.Errorf("key = %q, want ip:192.0.2.1", got)
			}
		}
		if w.Code != wantStatus {
			t.Errorf("request %d: status %d, want %d", i, w.Code, wantStatus)
		}
	}
}

func TestKeys(t *testing.T) {
	proxies := httplimit.WithTrustedProxies("10.0.0.0/8", "2001:db8:ffff::1", " 192.168.0.0/16 ")
	fwd := httplimit.WithProxyHeader("forwarded")
	tests := []struct {
		name    string
		opts    []httplimit.Option
		remote  string
		headers []string
		key     string // "" = 400 expected
	}{
		{"IPv4 peer", nil, "192.0.2.1:1234", nil, "ip:192.0.2.1"},
		{"peer without port", nil, "192.0.2.1", nil, "ip:192.0.2.1"},
		{"IPv4-mapped peer", nil, "[::ffff:192.0.2.1]:80", nil, "ip:192.0.2.1"},
		{"IPv6 peer grouped by /64", nil, "[2001:db8:1:2:3:4:5:6]:443", nil, "ip:2001:db8:1:2::/64"},
		{"IPv6 zone dropped", nil, "[fe80::1%eth0]:443", nil, "ip:fe80::/64"},
		// A zone names the listener's interface, not the client.
		{"IPv6 zone dropped at /128", []httplimit.Option{httplimit.WithIPv6Prefix(128)}, "[fe80::1%eth0]:443", nil, "ip:fe80::1"},
		{"IPv6 /128", []httplimit.Option{httplimit.WithIPv6Prefix(128)}, "[2001:db8:1:2:3:4:5:6]:443", nil, "ip:2001:db8:1:2:3:4:5:6"},
		{"IPv6 /48", []httplimit.Option{httplimit.WithIPv6Prefix(48)}, "[2001:db8:1:2:3:4:5:6]:443", nil, "ip:2001:db8:1::/48"},
		{"IPv4 /24", []httplimit.Option{httplimit.WithIPv4Prefix(24)}, "192.0.2.77:1", nil, "ip:192.0.2.0/24"},
		{"not an IP", nil, "@", nil, ""},

		{"untrusted peer, spoofed XFF", []httplimit.Option{proxies}, "198.51.100.7:1", []string{"X-Forwarded-For: 203.0.113.9"}, "ip:198.51.100.7"},
		{"trusted peer, XFF", []httplimit.Option{proxies}, "10.0.0.1:1", []string{"X-Forwarded-For: 203.0.113.9"}, "ip:203.0.113.9"},
		{"trusted chain, client spoof on the left", []httplimit.Option{proxies}, "10.0.0.1:1",
			[]string{"X-Forwarded-For: 6.6.6.6, 203.0.113.9, 10.0.0.2"}, "ip:203.0.113.9"},
		{"chain over several lines", []httplimit.Option{proxies}, "10.0.0.1:1",
			[]string{"X-Forwarded-For: 6.6.6.6", "X-Forwarded-For: 203.0.113.9,192.168.1.1"}, "ip:203.0.113.9"},
		{"every hop trusted: leftmost", []httplimit.Option{proxies}, "10.0.0.1:1",
			[]string{"X-Forwarded-For: 10.9.9.9, 10.0.0.2"}, "ip:10.9.9.9"},
		{"trusted peer, no header", []httplimit.Option{proxies}, "10.0.0.1:1", nil, "ip:10.0.0.1"},
		// An IPv4 client written IPv4-mapped by its proxy is an IPv4
		// client: keyed alone, not grouped with every other mapped
		// address into ::/64.
		{"IPv4-mapped hop", []httplimit.Option{proxies}, "10.0.0.1:1",
			[]string{"X-Forwarded-For: ::ffff:203.0.113.9"}, "ip:203.0.113.9"},
		{"IPv4-mapped trusted hop is skipped", []httplimit.Option{proxies}, "10.0.0.1:1",
			[]string{"X-Forwarded-For: 6.6.6.6, 203.0.113.9, ::ffff:10.0.0.2"}, "ip:203.0.113.9"},
		// Empty list elements are no hops (RFC 9110, section 5.6.1).
		{"empty XFF element on the right", []httplimit.Option{proxies}, "10.0.0.1:1",
			[]string{"X-Forwarded-For: 203.0.113.9,"}, "ip:203.0.113.9"},
		{"empty XFF elements between hops", []httplimit.Option{proxies}, "10.0.0.1:1",
			[]string{"X-Forwarded-For: 203.0.113.9, ,, 10.0.0.2"}, "ip:203.0.113.9"},
		// Trusted proxies named in IPv4-mapped form match the unmapped peer.
		{"trusted IPv4-mapped address", []httplimit.Option{httplimit.WithTrustedProxies("::ffff:10.0.0.1")}, "10.0.0.1:1",
			[]string{"X-Forwarded-For: 203.0.113.9"}, "ip:203.0.113.9"},
		{"trusted IPv4-mapped /96: every IPv4 peer", []httplimit.Option{httplimit.WithTrustedProxies("::ffff:0.0.0.0/96")}, "192.0.2.1:1",
			[]string{"X-Forwarded-For: 203.0.113.9"}, "ip:203.0.113.9"},
		{"trusted IPv4-mapped /108 is 172.16.0.0/12", []httplimit.Option{httplimit.WithTrustedProxies("::ffff:172.16.0.0/108")}, "172.31.255.1:1",
			[]string{"X-Forwarded-For: 203.0.113.9"}, "ip:203.0.113.9"},
		{"outside the IPv4-mapped /108", []httplimit.Option{httplimit.WithTrustedProxies("::ffff:172.16.0.0/108")}, "172.32.0.1:1",
			[]string{"X-Forwarded-For: 203.0.113.9"}, "ip:172.32.0.1"},
		{"trusted IPv4-mapped prefix", []httplimit.Option{httplimit.WithTrustedProxies("::ffff:172.16.0.0/108")}, "172.16.1.2:1",
			[]string{"X-Forwarded-For: 203.0.113.9"}, "ip:203.0.113.9"},
		{"outside an IPv4-mapped prefix", []httplimit.Option{httplimit.WithTrustedProxies("::ffff:172.16.0.0/120")}, "172.16.1.2:1",
			[]string{"X-Forwarded-For: 203.0.113.9"}, "ip:172.16.1.2"},
		{"trusted IPv6 proxy by address", []httplimit.Option{proxies}, "[2001:db8:ffff::1]:1",
			[]string{"X-Forwarded-For: 2001:db8:aaaa:bbbb::1"}, "ip:2001:db8:aaaa:bbbb::/64"},
		{"hops with ports", []httplimit.Option{proxies}, "10.0.0.1:1",
			[]string{"X-Forwarded-For: [2001:db8::1]:80, 203.0.113.9:4711"}, "ip:203.0.113.9"},
		{"bracketed hop", []httplimit.Option{proxies}, "10.0.0.1:1",
			[]string{"X-Forwarded-For: [2001:db8::1]"}, "ip:2001:db8::/64"},
		{"garbage left of the client is never read", []httplimit.Option{proxies}, "10.0.0.1:1",
			[]string{"X-Forwarded-For: nonsense, 203.0.113.9"}, "ip:203.0.113.9"},
		{"garbage from a trusted proxy", []httplimit.Option{proxies}, "10.0.0.1:1",
			[]string{"X-Forwarded-For: 203.0.113.9, nonsense"}, ""},
		{"XFF read: Forwarded ignored", []httplimit.Option{proxies}, "10.0.0.1:1",
			[]string{"Forwarded: for=6.6.6.6", "X-Forwarded-For: 203.0.113.9"}, "ip:203.0.113.9"},

		{"Forwarded", []httplimit.Option{proxies, fwd}, "10.0.0.1:1",
			[]string{`Forwarded: for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711"`}, "ip:2001:db8:cafe::/64"},
		{"Forwarded chain with trusted hop", []httplimit.Option{proxies, fwd}, "10.0.0.1:1",
			[]string{`Forwarded: for=6.6.6.6`, `Forwarded: for="203.0.113.9";proto=https, for=10.0.0.2`}, "ip:203.0.113.9"},
		{"Forwarded read: XFF ignored", []httplimit.Option{proxies, fwd}, "10.0.0.1:1",
			[]string{"X-Forwarded-For: 6.6.6.6", "Forwarded: for=203.0.113.9"}, "ip:203.0.113.9"},
		{"Forwarded from untrusted peer", []httplimit.Option{proxies, fwd}, "198.51.100.7:1",
			[]string{"Forwarded: for=203.0.113.9"}, "ip:198.51.100.7"},
		{"Forwarded quoted escape", []httplimit.Option{proxies, fwd}, "10.0.0.1:1",
			[]string{`Forwarded: by="a\"b";for=203.0.113.9`}, "ip:203.0.113.9"},
		{"Forwarded quoted-pair in for", []httplimit.Option{proxies, fwd}, "10.0.0.1:1",
			[]string{`Forwarded: for="20\3.0.113.9"`}, "ip:203.0.113.9"},
		{"Forwarded unknown", []httplimit.Option{proxies, fwd}, "10.0.0.1:1", []string{"Forwarded: for=unknown"}, ""},
		{"Forwarded obfuscated", []httplimit.Option{proxies, fwd}, "10.0.0.1:1", []string{`Forwarded: for="_hidden"`}, ""},
		{"Forwarded without for", []httplimit.Option{proxies, fwd}, "10.0.0.1:1", []string{"Forwarded: proto=https"}, ""},
		// An obfuscated port (RFC 7239, section 6.3) leaves the address.
		{"Forwarded obfuscated port", []httplimit.Option{proxies, fwd}, "10.0.0.1:1",
			[]string{`Forwarded: for="203.0.113.9:_p1"`}, "ip:203.0.113.9"},
		{"Forwarded IPv6 with obfuscated port", []httplimit.Option{proxies, fwd}, "10.0.0.1:1",
			[]string{`Forwarded: for="[2001:db8::1]:_p.1-x"`}, "ip:2001:db8::/64"},
		{"Forwarded bad obfuscated port", []httplimit.Option{proxies, fwd}, "10.0.0.1:1",
			[]string{`Forwarded: for="203.0.113.9:_p!"`}, ""},
		{"Forwarded empty obfuscated port", []httplimit.Option{proxies, fwd}, "10.0.0.1:1",
			[]string{`Forwarded: for="203.0.113.9:_"`}, ""},
		{"Forwarded obfuscated port, space", []httplimit.Option{proxies, fwd}, "10.0.0.1:1",
			[]string{`Forwarded: for="203.0.113.9:_p1 "`}, "ip:203.0.113.9"},
		{"Forwarded obfuscated port alone", []httplimit.Option{proxies, fwd}, "10.0.0.1:1",
			[]string{`Forwarded: for="_host:_p1"`}, ""},
		{"Forwarded malformed", []httplimit.Option{proxies, fwd}, "10.0.0.1:1", []string{`Forwarded: for="203.0.113.9`}, ""},
		{"Forwarded missing =", []httplimit.Option{proxies, fwd}, "10.0.0.1:1", []string{`Forwarded: for 203.0.113.9`}, ""},
		{"Forwarded empty pairs and elements", []httplimit.Option{proxies, fwd}, "10.0.0.1:1",
			[]string{`Forwarded: , for=6.6.6.6;, ;for=203.0.113.9;;proto=https;,`}, "ip:203.0.113.9"},
		{"Forwarded garbage left of the client is never read", []httplimit.Option{proxies, fwd}, "10.0.0.1:1",
			[]string{`Forwarded: for=[2001:db8::1];by, for=203.0.113.9`}, "ip:203.0.113.9"},
		{"Forwarded malformed hop reached", []httplimit.Option{proxies, fwd}, "10.0.0.1:1",
			[]string{`Forwarded: for=203.0.113.9, for=[2001:db8::1]`}, ""},
		{"Forwarded open quote swallows the proxy's element", []httplimit.Option{proxies, fwd}, "10.0.0.1:1",
			[]string{`Forwarded: for="6.6.6.6, for=203.0.113.9`}, ""},
		{"Forwarded comma in quotes", []httplimit.Option{proxies, fwd}, "10.0.0.1:1",
			[]string{`Forwarded: for="6.6.6.6, for=203.0.113.9"`}, ""},
		{"Forwarded open quote ends with its line", []httplimit.Option{proxies, fwd}, "10.0.0.1:1",
			[]string{`Forwarded: for="6.6.6.6\`, `Forwarded: for=203.0.113.9`}, "ip:203.0.113.9"},

		{"header key", []httplimit.Option{httplimit.WithKeyFunc(httplimit.KeyByHeader("x-api-key"))}, "192.0.2.1:1",
			[]string{"X-Api-Key: abc123"}, "h:x-api-key:abc123"},
		{"header missing", []httplimit.Option{httplimit.WithKeyFunc(httplimit.KeyByHeader("X-API-Key"))}, "192.0.2.1:1", nil, ""},
		{"header too long for the limiter", []httplimit.Option{httplimit.WithKeyFunc(httplimit.KeyByHeader("X-API-Key"))}, "192.0.2.1:1",
			[]string{"X-API-Key: " + strings.Repeat("k", limiter.MaxKeyLen)}, ""},
		{"custom key", []httplimit.Option{httplimit.WithKeyFunc(func(r *http.Request) (string, error) { return "user:" + r.URL.Query().Get("u"), nil })},
			"192.0.2.1:1", nil, "user:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t, []limiter.Bucket{{Capacity: 5, Period: time.Second}}, tt.opts...)
			w := f.do(request(tt.remote, tt.headers...))
			if tt.key == "" {
				check(t, "request", w, want{status: 400, headers: map[string]string{
					"Content-Type":                  "application/json",
					httplimit.HeaderRateLimit:       "",
					httplimit.HeaderRateLimitPolicy: "",
				}})
				if !strings.HasPrefix(w.Body.String(), `{"message":"httplimit: cannot key request: `) {
					t.Errorf("body = %q, want the key error", w.Body.String())
				}
				if f.served != 0 || f.store.Calls() != (faultstore.Counts{}) {
					t.Errorf("served %d, store calls %+v; want neither", f.served, f.store.Calls())
				}
				return
			}
			check(t, "request", w, want{status: 200, headers: map[string]string{"X-Test-Key": tt.key}})
		})
	}
}

func TestIPv6HostsShareTheirSlash64(t *testing.T) {
	f := setup(t, []limiter.Bucket{{Capacity: 2, Period: time.Minute}})
	for i, remote := range []string{"[2001:db8:1:2::1]:1", "[2001:db8:1:2:ffff:ffff:ffff:ffff]:2", "[2001:db8:1:2::abcd]:3"} {
		if w, wantCode := f.do(request(remote)), []int{200, 200, 429}[i]; w.Code != wantCode {
			t.Errorf("request %d from %s: status %d, want %d", i, remote, w.Code, wantCode)
		}
	}
	if w := f.do(request("[2001:db8:1:3::1]:1")); w.Code != 200 {
		t.Errorf("next /64: status %d, want 200", w.Code)
	}
}

func TestHashedKeys(t *testing.T) {
	secret := []byte("0123456789abcdef")
	f := setup(t, []limiter.Bucket{{Capacity: 5, Period: time.Second}}, httplimit.WithHashedKeys(secret))
	var seen []string
	f.store.Hook(func(_ faultstore.Op, key string) { seen = append(seen, key) })
	k1 := f.do(request("192.0.2.1:1")).Header().Get("X-Test-Key")
	k2 := f.do(request("192.0.2.1:2")).Header().Get("X-Test-Key")
	k3 := f.do(request("192.0.2.2:1")).Header().Get("X-Test-Key")
	if !strings.HasPrefix(k1, "hmac:") || len(k1) != len("hmac:")+43 {
		t.Errorf("key = %q, want hmac: and 43 base64url characters", k1)
	}
	if k1 != k2 || k1 == k3 {
		t.Errorf("keys %q %q %q: want the first two equal, the third different", k1, k2, k3)
	}
	for _, k := range seen {
		if strings.Contains(k, "192.0.2") {
			t.Errorf("store saw the plain address in key %q", k)
		}
	}
	if len(seen) == 0 {
		t.Error("store saw no key")
	}
}

func TestFailClosedByDefault(t *testing.T) {
	f := setup(t, []limiter.Bucket{{Capacity: 5, Period: 10 * time.Second}})
	f.store.FailAll(fmt.Errorf("test: %w", storage.ErrUnavailable))
	check(t, "store down", f.do(request("192.0.2.1:1")), want{
		status: 503,
		body:   `{"message":"rate limiter unavailable, retry later"}` + "\n",
		headers: map[string]string{
			httplimit.HeaderRetryAfter:      "1",
			httplimit.HeaderRateLimitPolicy: `"default";q=5;w=10`,
			httplimit.HeaderRateLimit:       "",
			"Content-Type":                  "application/json",
		},
	})
	if f.served != 0 {
		t.Errorf("served %d requests with the store down, want 0", f.served)
	}
	f.store.FailAll(nil)
	check(t, "store back", f.do(request("192.0.2.1:1")), allowed(`"default";q=5;w=10`, `"default";r=4;t=2`))
}

func TestFailOpen(t *testing.T) {
	var reported []error
	f := setup(t, []limiter.Bucket{{Capacity: 5, Period: 10 * time.Second}},
		httplimit.WithFailOpen(func(r *http.Request, err error) { reported = append(reported, err) }))
	f.store.FailAll(fmt.Errorf("test: %w", storage.ErrUnavailable))
	for i := range 7 {
		check(t, fmt.Sprintf("request %d", i), f.do(request("192.0.2.1:1")), want{status: 200, body: "ok", headers: map[string]string{
			httplimit.HeaderRateLimitPolicy: `"default";q=5;w=10`,
			httplimit.HeaderRateLimit:       "",
			httplimit.HeaderRetryAfter:      "",
			"X-Test-Key":                    "", // no decision in the context
		}})
	}
	if f.served != 7 || len(reported) != 7 {
		t.Fatalf("served %d, reported %d; want 7 and 7", f.served, len(reported))
	}
	if !errors.Is(reported[0], storage.ErrUnavailable) {
		t.Errorf("reported %v, want an error wrapping storage.ErrUnavailable", reported[0])
	}
}

func TestFailOpenDoesNotServeBadCosts(t *testing.T) {
	var reported, handled []error
	cost := int64(0)
	f := setup(t, []limiter.Bucket{{Capacity: 5, Period: 10 * time.Second}},
		httplimit.WithCostFunc(func(*http.Request) int64 { return cost }),
		httplimit.WithFailOpen(func(r *http.Request, err error) { reported = append(reported, err) }),
		httplimit.WithErrorHandler(func(w http.ResponseWriter, r *http.Request, err error) {
			handled = append(handled, err)
			httplimit.WriteError(w, r, err)
		}))
	check(t, "cost 0", f.do(request("192.0.2.1:1")), want{status: 500, body: `{"message":"internal server error"}` + "\n"})
	cost = 6
	check(t, "cost 6", f.do(request("192.0.2.1:1")), want{status: 500})
	if f.served != 0 || len(reported) != 0 || len(handled) != 2 {
		t.Fatalf("served %d, reported %d, handled %d; want 0, 0, 2", f.served, len(reported), len(handled))
	}
	if !errors.Is(handled[0], limiter.ErrInvalidCost) || !errors.Is(handled[1], limiter.ErrCostExceedsCapacity) {
		t.Errorf("handled %v; want ErrInvalidCost then ErrCostExceedsCapacity", handled)
	}
	cost = 5
	check(t, "cost 5", f.do(request("192.0.2.1:1")), allowed(`"default";q=5;w=10`, `"default";r=0;t=2`))
}

func TestErrorHandlerSeesKeyErrors(t *testing.T) {
	var got error
	f := setup(t, []limiter.Bucket{{Capacity: 5, Period: time.Second}},
		httplimit.WithKeyFunc(httplimit.KeyByHeader("X-User")),
		httplimit.WithErrorHandler(func(w http.ResponseWriter, r *http.Request, err error) {
			got = err
			w.WriteHeader(http.StatusUnauthorized)
		}))
	check(t, "no header", f.do(request("192.0.2.1:1")), want{status: 401})
	if !errors.Is(got, httplimit.ErrNoKey) || got.Error() != "httplimit: cannot key request: missing header X-User" {
		t.Errorf("error handler got %v, want ErrNoKey naming the header", got)
	}
	check(t, "key too long", f.do(request("192.0.2.1:1", "X-User: "+strings.Repeat("u", limiter.MaxKeyLen))), want{status: 401})
	if !errors.Is(got, httplimit.ErrNoKey) || !errors.Is(got, limiter.ErrInvalidKey) {
		t.Errorf("error handler got %v, want ErrNoKey and limiter.ErrInvalidKey", got)
	}
}

func TestSkip(t *testing.T) {
	f := setup(t, []limiter.Bucket{{Capacity: 1, Period: time.Minute}},
		httplimit.WithSkip(func(r *http.Request) bool { return r.URL.Path == "/healthz" }))
	for range 3 {
		r := request("192.0.2.1:1")
		r.URL.Path = "/healthz"
		check(t, "health check", f.do(r), want{status: 200, headers: map[string]string{
			httplimit.HeaderRateLimit:       "",
			httplimit.HeaderRateLimitPolicy: "",
		}})
	}
	if calls := f.store.Calls(); calls != (faultstore.Counts{}) {
		t.Errorf("skipped requests reached the store: %+v", calls)
	}
	check(t, "first counted", f.do(request("192.0.2.1:1")), allowed(`"default";q=1;w=60`, `"default";r=0;t=60`))
}

func TestCost(t *testing.T) {
	const p = `"default";q=5;w=10`
	f := setup(t, []limiter.Bucket{{Capacity: 5, Period: 10 * time.Second}}, httplimit.WithCost(2))
	run(t, f, "192.0.2.1:1", []step{
		{0, allowed(p, `"default";r=3;t=2`)},
		{0, allowed(p, `"default";r=1;t=2`)},
		// One token left, two wanted: the next token is 2s away, the
		// second 4s: Retry-After covers the cost, t the next token.
		{0, denied(p, `"default";r=1;t=2`, "2")},
		{time.Second, denied(p, `"default";r=1;t=1`, "1")},
		{time.Second, allowed(p, `"default";r=0;t=2`)},
	})
}

func TestDenyHandler(t *testing.T) {
	var res httplimit.Result
	deny := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res, _ = httplimit.FromContext(r.Context())
		// The fields are set before the deny handler runs.
		w.Header().Set("X-Seen", w.Header().Get(httplimit.HeaderRetryAfter)+"|"+w.Header().Get(httplimit.HeaderRateLimit))
		w.WriteHeader(http.StatusTeapot)
	})
	f := setup(t, []limiter.Bucket{{Capacity: 1, Period: 3 * time.Second}}, httplimit.WithDenyHandler(deny))
	f.do(request("192.0.2.1:1"))
	f.clock.Advance(500 * time.Millisecond)
	check(t, "denied", f.do(request("192.0.2.1:1")), want{status: 418, headers: map[string]string{
		"X-Seen":                   `3|"default";r=0;t=3`,
		httplimit.HeaderRetryAfter: "3",
	}})
	wantRes := httplimit.Result{Key: "ip:192.0.2.1", Cost: 1, Decision: limiter.Decision{
		Allowed: false, Limit: 1, Remaining: 0, RetryAfter: 2500 * time.Millisecond, ResetAfter: 2500 * time.Millisecond,
	}}
	if res != wantRes {
		t.Errorf("FromContext in the deny handler = %+v, want %+v", res, wantRes)
	}
}

func TestFromContextOutsideMiddleware(t *testing.T) {
	if res, ok := httplimit.FromContext(request("192.0.2.1:1").Context()); ok {
		t.Errorf("FromContext = %+v, true; want false", res)
	}
}

func TestNewRejects(t *testing.T) {
	store := memory.New()
	t.Cleanup(func() { _ = store.Close() })
	lim, err := limiter.New(store, []limiter.Bucket{{Capacity: 5, Period: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	keyFunc := httplimit.WithKeyFunc(httplimit.KeyByHeader("X-User"))
	tests := []struct {
		name string
		opts []httplimit.Option
	}{
		{"bad CIDR", []httplimit.Option{httplimit.WithTrustedProxies("10.0.0.0/33")}},
		{"not an address", []httplimit.Option{httplimit.WithTrustedProxies("proxy.internal")}},
		{"IPv4-mapped prefix under 96 bits", []httplimit.Option{httplimit.WithTrustedProxies("::ffff:0.0.0.0/95")}},
		{"IPv6 prefix 0", []httplimit.Option{httplimit.WithIPv6Prefix(0)}},
		{"IPv6 prefix -1", []httplimit.Option{httplimit.WithIPv6Prefix(-1)}},
		{"IPv6 prefix 129", []httplimit.Option{httplimit.WithIPv6Prefix(129)}},
		// /0 would put every client of a family in one bucket.
		{"IPv4 prefix 0", []httplimit.Option{httplimit.WithIPv4Prefix(0)}},
		{"IPv4 prefix -1", []httplimit.Option{httplimit.WithIPv4Prefix(-1)}},
		{"IPv4 prefix 33", []httplimit.Option{httplimit.WithIPv4Prefix(33)}},
		{"unknown proxy header", []httplimit.Option{httplimit.WithProxyHeader("X-Real-IP")}},
		{"key func and trusted proxies", []httplimit.Option{keyFunc, httplimit.WithTrustedProxies("10.0.0.0/8")}},
		{"key func and IPv6 prefix", []httplimit.Option{httplimit.WithIPv6Prefix(56), keyFunc}},
		{"nil key func", []httplimit.Option{httplimit.WithKeyFunc(nil)}},
		{"cost 0", []httplimit.Option{httplimit.WithCost(0)}},
		{"cost above capacity", []httplimit.Option{httplimit.WithCost(6)}},
		{"two costs", []httplimit.Option{httplimit.WithCost(1), httplimit.WithCostFunc(func(*http.Request) int64 { return 1 })}},
		{"nil cost func", []httplimit.Option{httplimit.WithCostFunc(nil)}},
		{"nil deny handler", []httplimit.Option{httplimit.WithDenyHandler(nil)}},
		{"nil deny handler func", []httplimit.Option{httplimit.WithDenyHandler(http.HandlerFunc(nil))}},
		{"nil error handler", []httplimit.Option{httplimit.WithErrorHandler(nil)}},
		{"fail open without report", []httplimit.Option{httplimit.WithFailOpen(nil)}},
		{"nil skip", []httplimit.Option{httplimit.WithSkip(nil)}},
		{"empty policy name", []httplimit.Option{httplimit.WithPolicyName("")}},
		{"quote in policy name", []httplimit.Option{httplimit.WithPolicyName(`a"b`)}},
		{"empty hash secret", []httplimit.Option{httplimit.WithHashedKeys(nil)}},
		{"nil option", []httplimit.Option{nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mw, err := httplimit.New(lim, tt.opts...)
			if !errors.Is(err, httplimit.ErrInvalidOption) || mw != nil {
				t.Errorf("New = %v, %v; want nil and ErrInvalidOption", mw != nil, err)
			}
		})
	}
	if _, err := httplimit.New(nil); !errors.Is(err, httplimit.ErrInvalidOption) {
		t.Errorf("New(nil) = %v, want ErrInvalidOption", err)
	}
	if mw, err := httplimit.New(&limiter.Limiter{}); !errors.Is(err, httplimit.ErrInvalidOption) || mw != nil {
		t.Errorf("New of a zero Limiter = %v, %v; want nil and ErrInvalidOption", mw != nil, err)
	}
}

// TestHeadersFromFallback: while the store fails, a fallback limiter with
// buckets of its own decides, and the headers describe its buckets, not
// the shared ones: each process's share of a shared limit here.
func TestHeadersFromFallback(t *testing.T) {
	f, lim := fallbackFixture(t, 100, 25)
	mw, err := httplimit.New(lim)
	if err != nil {
		t.Fatal(err)
	}
	f.h = mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.served++
		_, _ = w.Write([]byte("ok"))
	}))
	const shared, own = `"default";q=100;w=60`, `"default";q=25;w=60`
	const remote = "192.0.2.1:1234"
	check(t, "store up", f.do(request(remote)), allowed(shared, `"default";r=99;t=1`))
	f.store.FailAll(storage.ErrUnavailable)
	// A token of the fallback's comes every 2.4 s.
	check(t, "store down, first", f.do(request(remote)), allowed(own, `"default";r=24;t=3`))
	for range 23 {
		f.do(request(remote))
	}
	check(t, "store down, 25th", f.do(request(remote)), allowed(own, `"default";r=0;t=3`))
	check(t, "store down, 26th", f.do(request(remote)), denied(own, `"default";r=0;t=3`, "3"))
	f.clock.Advance(2 * time.Second)
	check(t, "store down, 2 s later", f.do(request(remote)), denied(own, `"default";r=0;t=1`, "1"))
	f.clock.Advance(time.Second)
	check(t, "store down, 3 s later", f.do(request(remote)), allowed(own, `"default";r=0;t=2`))
	f.store.FailAll(nil)
	check(t, "store up again", f.do(request(remote)), allowed(shared, `"default";r=99;t=1`))
}

// fallbackFixture returns a fixture whose store can be made to fail and a
// limiter on it of shared tokens a minute, made WithFallback a limiter of
// local tokens a minute on a memory store of its own, both on f.clock.
func fallbackFixture(t *testing.T, shared, local int64) (*fixture, *limiter.Limiter) {
	t.Helper()
	f := &fixture{clock: fakeclock.New(epoch), store: faultstore.New(memory.New())}
	t.Cleanup(func() { _ = f.store.Close() })
	mem := memory.New()
	t.Cleanup(func() { _ = mem.Close() })
	fallback, err := limiter.New(mem, []limiter.Bucket{{Capacity: local, Period: time.Minute}}, limiter.WithClock(f.clock))
	if err != nil {
		t.Fatal(err)
	}
	lim, err := limiter.New(f.store, []limiter.Bucket{{Capacity: shared, Period: time.Minute}},
		limiter.WithClock(f.clock), limiter.WithFallback(fallback))
	if err != nil {
		t.Fatal(err)
	}
	return f, lim
}

// TestCostAboveFallbackCapacity: a fixed cost that the fallback limiter's
// buckets cannot cover is refused by New, like one above the limiter's
// own; a cost function's such cost, accepted by the shared buckets, meets
// the failure policy while the store fails (503, or served under
// WithFailOpen), never the 500 of a bad cost.
func TestCostAboveFallbackCapacity(t *testing.T) {
	f, lim := fallbackFixture(t, 10, 2)
	if mw, err := httplimit.New(lim, httplimit.WithCost(5)); !errors.Is(err, httplimit.ErrInvalidOption) || mw != nil {
		t.Errorf("New with WithCost(5) and a fallback of capacity 2 = %v, %v; want nil and ErrInvalidOption", mw != nil, err)
	}
	cost5 := httplimit.WithCostFunc(func(*http.Request) int64 { return 5 })
	for _, failOpen := range []bool{false, true} {
		opts := []httplimit.Option{cost5}
		if failOpen {
			opts = append(opts, httplimit.WithFailOpen(func(*http.Request, error) {}))
		}
		mw, err := httplimit.New(lim, opts...)
		if err != nil {
			t.Fatal(err)
		}
		served := 0
		h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served++ }))
		f.store.FailAll(storage.ErrUnavailable)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, request("192.0.2.1:1234"))
		f.store.FailAll(nil)
		want, wantServed := http.StatusServiceUnavailable, 0
		if failOpen {
			want, wantServed = http.StatusOK, 1
		}
		if w.Code != want || served != wantServed {
			t.Errorf("fail open %v, cost 5, store down: status %d, served %d; want %d, %d", failOpen, w.Code, served, want, wantServed)
		}
	}
}

// TestOnDecisionMarksDryRun: under a dry-run limiter every request is
// served, and the decision callback sees which ones would have been
// denied.
func TestOnDecisionMarksDryRun(t *testing.T) {
	lim, err := limiter.New(memory.New(), []limiter.Bucket{{Capacity: 2, Period: time.Minute}},
		limiter.WithClock(fakeclock.New(epoch)), limiter.WithDryRun())
	if err != nil {
		t.Fatal(err)
	}
	var seen []bool
	mw, err := httplimit.New(lim, httplimit.WithOnDecision(func(r *http.Request, res httplimit.Result) {
		seen = append(seen, res.Decision.DryRun)
	}))
	if err != nil {
		t.Fatal(err)
	}
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	for i := range 4 {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, request("192.0.2.1:1234"))
		if w.Code != http.StatusOK {
			t.Errorf("request %d under dry run: status %d, want 200", i, w.Code)
		}
	}
	if want := []bool{false, false, true, true}; !slices.Equal(seen, want) {
		t.Errorf("callback saw DryRun %v, want %v", seen, want)
	}
	if _, err := httplimit.New(lim, httplimit.WithOnDecision(nil)); !errors.Is(err, httplimit.ErrInvalidOption) {
		t.Errorf("WithOnDecision(nil): %v, want ErrInvalidOption", err)
	}
}

// TestStackedInnerFieldsOnly: behind an outer middleware (by IP, with the
// legacy trio), a request the inner one (by user) decides carries the
// inner one's fields only, whatever it decides: allowed without the trio,
// a dry-run denial with its policy alone, a 503 after a store failure with
// its policy alone, a 400 for a missing key with none. One the inner one
// skips keeps the outer one's.
func TestStackedInnerFieldsOnly(t *testing.T) {
	clock := fakeclock.New(epoch)
	outerStore := memory.New()
	t.Cleanup(func() { _ = outerStore.Close() })
	outerLim, err := limiter.New(outerStore, []limiter.Bucket{{Capacity: 100, Period: time.Minute}}, limiter.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	outer, err := httplimit.New(outerLim, httplimit.WithLegacyHeaders(), httplimit.WithPolicyName("ip"))
	if err != nil {
		t.Fatal(err)
	}
	innerStore := faultstore.New(memory.New())
	t.Cleanup(func() { _ = innerStore.Close() })
	newInner := func(opts ...limiter.Option) *limiter.Limiter {
		lim, err := limiter.New(innerStore, []limiter.Bucket{{Capacity: 1, Period: time.Minute}}, append(opts, limiter.WithClock(clock))...)
		if err != nil {
			t.Fatal(err)
		}
		return lim
	}
	stack := func(lim *limiter.Limiter) http.Handler {
		inner, err := httplimit.New(lim, httplimit.WithKeyFunc(httplimit.KeyByHeader("X-User")),
			httplimit.WithSkip(func(r *http.Request) bool { return r.URL.Path == "/health" }))
		if err != nil {
			t.Fatal(err)
		}
		return outer(inner(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })))
	}
	enforced, dryRun := stack(newInner()), stack(newInner(limiter.WithDryRun()))
	do := func(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	const remote = "192.0.2.1:1234"
	legacy := []string{httplimit.HeaderXRateLimitLimit, httplimit.HeaderXRateLimitRemaining, httplimit.HeaderXRateLimitReset}
	fields := func(w *httptest.ResponseRecorder) map[string]string {
		got := make(map[string]string)
		for _, f := range append([]string{httplimit.HeaderRateLimitPolicy, httplimit.HeaderRateLimit, httplimit.HeaderRetryAfter}, legacy...) {
			if v := w.Header().Values(f); len(v) > 0 {
				got[f] = strings.Join(v, " | ")
			}
		}
		return got
	}
	const innerPolicy = `"default";q=1;w=60`
	steps := []struct {
		name   string
		h      http.Handler
		r      *http.Request
		fail   bool
		status int
		want   map[string]string
	}{
		{"allowed", enforced, request(remote, "X-User: a"), false, 200, map[string]string{
			httplimit.HeaderRateLimitPolicy: innerPolicy, httplimit.HeaderRateLimit: `"default";r=0;t=60`}},
		{"denied", enforced, request(remote, "X-User: a"), false, 429, map[string]string{
			httplimit.HeaderRateLimitPolicy: innerPolicy, httplimit.HeaderRateLimit: `"default";r=0;t=60`, httplimit.HeaderRetryAfter: "60"}},
		{"dry run, would deny", dryRun, request(remote, "X-User: a"), false, 200, map[string]string{
			httplimit.HeaderRateLimitPolicy: innerPolicy}},
		{"store down", enforced, request(remote, "X-User: b"), true, 503, map[string]string{
			httplimit.HeaderRateLimitPolicy: innerPolicy, httplimit.HeaderRetryAfter: "1"}},
		{"no key", enforced, request(remote), false, 400, map[string]string{}},
	}
	for _, s := range steps {
		innerStore.FailAll(nil)
		if s.fail {
			innerStore.FailAll(storage.ErrUnavailable)
		}
		w := do(s.h, s.r)
		if w.Code != s.status || !maps.Equal(fields(w), s.want) {
			t.Errorf("%s: status %d, fields %q; want %d, %q", s.name, w.Code, fields(w), s.status, s.want)
		}
	}
	innerStore.FailAll(nil)
	h := httptest.NewRequest(http.MethodGet, "/health", nil)
	h.RemoteAddr = remote
	if w := do(enforced, h); w.Code != 200 || w.Header().Get(httplimit.HeaderXRateLimitLimit) != "100" ||
		w.Header().Get(httplimit.HeaderRateLimitPolicy) != `"ip";q=100;w=60` {
		t.Errorf("skipped by the inner one: status %d, fields %q; want 200 and the outer one's", w.Code, fields(w))
	}
}

// TestClearsFieldsInAnySpelling: fields that code in front of the
// middleware set through the header map, in the spec's spelling or in
// lower case as HTTP/2 code may, are removed too: the answer carries the
// middleware's own fields only.
func TestClearsFieldsInAnySpelling(t *testing.T) {
	lim, err := limiter.New(memory.New(), []limiter.Bucket{{Capacity: 10, Period: time.Minute}}, limiter.WithClock(fakeclock.New(epoch)))
	if err != nil {
		t.Fatal(err)
	}
	mw, err := httplimit.New(lim)
	if err != nil {
		t.Fatal(err)
	}
	inner := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["RateLimit"] = []string{`"outer";r=99;t=1`}
		w.Header()["ratelimit-policy"] = []string{`"outer";q=100;w=60`}
		w.Header()["x-ratelimit-limit"] = []string{"100"}
		inner.ServeHTTP(w, r)
	})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, request("192.0.2.1:1234"))
	want := map[string][]string{
		"Ratelimit":        {`"default";r=9;t=6`},
		"Ratelimit-Policy": {`"default";q=10;w=60`},
	}
	got := make(map[string][]string)
	for name, v := range w.Result().Header {
		if strings.Contains(strings.ToLower(name), "ratelimit") {
			got[name] = v
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rate-limit fields = %q, want %q", got, want)
	}
}
