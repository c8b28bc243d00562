package httplimit_test

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-go/sluice/limiter"
	"github.com/sluice-go/sluice/limiter/httplimit"
	"github.com/sluice-go/sluice/storage/memory"
)

// keyProbe runs requests through the middleware and reports the key each
// one was limited by, or the error the error handler was given.
type keyProbe struct {
	h   http.Handler
	key string
	err error
}

func newKeyProbe(t testing.TB, lim *limiter.Limiter, opts ...httplimit.Option) (*keyProbe, error) {
	p := &keyProbe{}
	opts = append(opts,
		httplimit.WithOnDecision(func(_ *http.Request, res httplimit.Result) { p.key = res.Key }),
		httplimit.WithErrorHandler(func(w http.ResponseWriter, _ *http.Request, err error) {
			p.err = err
			w.WriteHeader(http.StatusBadRequest)
		}),
	)
	mw, err := httplimit.New(lim, opts...)
	if err != nil {
		return nil, err
	}
	p.h = mw(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	return p, nil
}

// do returns the key of r, or the error handler's error.
func (p *keyProbe) do(r *http.Request) (string, error) {
	p.key, p.err = "", nil
	p.h.ServeHTTP(httptest.NewRecorder(), r)
	return p.key, p.err
}

// fuzzLimiter never denies, so every request that yields a key is decided.
func fuzzLimiter(f *testing.F) *limiter.Limiter {
	store := memory.New()
	f.Cleanup(func() { store.Close() })
	lim, err := limiter.New(store, []limiter.Bucket{{Capacity: limiter.MaxCapacity, Period: time.Nanosecond}}, limiter.WithCacheSize(0))
	if err != nil {
		f.Fatal(err)
	}
	return lim
}

// refKey is the documented key of client address ip: "ip:" and the
// address, or its prefix of v4/v6 bits.
func refKey(ip netip.Addr, v4, v6 int) string {
	ip = ip.WithZone("").Unmap()
	bits := v6
	if ip.Is4() {
		bits = v4
	}
	if bits == ip.BitLen() {
		return "ip:" + ip.String()
	}
	return "ip:" + netip.PrefixFrom(ip, bits).Masked().String()
}

// refHop parses one forwarding hop as the documentation describes it: an
// IP address with or without a port, IPv6 in brackets when it has one.
func refHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if host, port, err := net.SplitHostPort(s); err == nil {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n > 65535 {
			return netip.Addr{}, false
		}
		s = host
	} else if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		s = s[1 : len(s)-1]
	}
	ip, err := netip.ParseAddr(s)
	return ip.WithZone("").Unmap(), err == nil
}

// refRemote parses RemoteAddr, which the server writes: "host:port" (any
// port) or a bare address.
func refRemote(s string) (netip.Addr, bool) {
	if host, _, err := net.SplitHostPort(s); err == nil {
		s = host
	}
	ip, err := netip.ParseAddr(s)
	return ip.WithZone("").Unmap(), err == nil
}

// checkKeyForm checks that key is "ip:" and a canonical address or
// masked prefix of the configured length, with no zone.
func checkKeyForm(t *testing.T, key string, v4, v6 int) {
	t.Helper()
	rest, ok := strings.CutPrefix(key, "ip:")
	if !ok {
		t.Fatalf("key %q does not start with ip:", key)
	}
	var ip netip.Addr
	bits := -1
	if p, err := netip.ParsePrefix(rest); err == nil {
		if p != p.Masked() || p.String() != rest {
			t.Fatalf("key %q: prefix not canonical", key)
		}
		ip, bits = p.Addr(), p.Bits()
	} else if a, err := netip.ParseAddr(rest); err == nil {
		if a.String() != rest || a.Zone() != "" {
			t.Fatalf("key %q: address not canonical", key)
		}
		ip, bits = a, a.BitLen()
	} else {
		t.Fatalf("key %q is neither an address nor a prefix", key)
	}
	if ip.Is4In6() {
		t.Fatalf("key %q: IPv4-mapped address not unmapped", key)
	}
	want := v6
	if ip.Is4() {
		want = v4
	}
	if bits != want {
		t.Fatalf("key %q: /%d, want /%d", key, bits, want)
	}
}

// refXFF is the documented client of a request from a trusted peer: the
// rightmost X-Forwarded-For hop that is not trusted (every hop read must
// be an address), the leftmost when all are, the peer when there are
// none.
func refXFF(peer netip.Addr, lines []string, trusted func(netip.Addr) bool) (netip.Addr, bool) {
	var hops []string
	for _, line := range lines {
		for _, h := range strings.Split(line, ",") {
			if h = strings.TrimSpace(h); h != "" {
				hops = append(hops, h)
			}
		}
	}
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		ip, ok := refHop(hops[i])
		if !ok {
			return netip.Addr{}, false
		}
		client = ip
		if !trusted(ip) {
			break
		}
	}
	return client, true
}

// forCandidates returns every address written after a "for=" anywhere in
// the Forwarded lines, as a token or a quoted string: a loose superset of
// what an RFC 7239 parser may take as a hop.
func forCandidates(lines []string) []netip.Addr {
	var out []netip.Addr
	for _, line := range lines {
		low := asciiLower(line) // byte for byte, so indexes match line
		for i := strings.Index(low, "for="); i >= 0; {
			v := line[i+4:]
			if strings.HasPrefix(v, `"`) {
				var b strings.Builder
				for j := 1; j < len(v) && v[j] != '"'; j++ {
					if v[j] == '\\' && j+1 < len(v) {
						j++
					}
					b.WriteByte(v[j])
				}
				v = b.String()
			} else if end := strings.IndexAny(v, ";, \t\""); end >= 0 {
				v = v[:end]
			}
			if ip, ok := refHop(v); ok {
				out = append(out, ip)
			}
			next := strings.Index(low[i+1:], "for=")
			if next < 0 {
				break
			}
			i += 1 + next
		}
	}
	return out
}

// asciiLower lowers ASCII letters only, keeping every byte in place.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// FuzzClientKey sends requests with arbitrary RemoteAddr, forwarding
// headers and trusted proxies: a header is read only from a trusted peer,
// a malformed hop that is read is an ErrNoKey error, and every key is a
// canonical address or prefix of a hop actually in the request.
func FuzzClientKey(f *testing.F) {
	type seed struct {
		remote, header, trusted string
		forwarded               bool
		v4, v6                  uint8
	}
	for _, s := range []seed{
		{"192.0.2.1:1234", "", "", false, 32, 64},
		{"10.0.0.1:1", "203.0.113.9", "10.0.0.0/8", false, 32, 64},
		{"10.0.0.1:1", "6.6.6.6, 203.0.113.9, 10.0.0.2", "10.0.0.0/8", false, 24, 64},
		{"10.0.0.1:1", "203.0.113.9, nonsense", "10.0.0.0/8", false, 32, 64},
		{"10.0.0.1:1", "nonsense, 203.0.113.9", "10.0.0.0/8", false, 32, 64},
		{"10.0.0.1:1", "6.6.6.6\n203.0.113.9,192.168.1.1", "10.0.0.0/8 192.168.0.0/16", false, 32, 64},
		{"[::1]:80", "[2001:db8::1]:80, 203.0.113.9:4711", "::1", false, 32, 128},
		{"[fe80::1%eth0]:443", "fe80::2%eth1", "fe80::/10", false, 32, 64},
		{"[::ffff:10.0.0.1]:1", "::ffff:203.0.113.9", "::ffff:10.0.0.0/104", false, 32, 64},
		{"10.0.0.1:1", `for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711"`, "10.0.0.0/8", true, 32, 64},
		{"10.0.0.1:1", `for="[2001:db8::1]", for=10.0.0.2`, "10.0.0.0/8", true, 32, 48},
		{"10.0.0.1:1", `for="_hidden", for=unknown`, "10.0.0.0/8", true, 32, 64},
		{"10.0.0.1:1", `for="1.2.3.4, for=5.6.7.8`, "10.0.0.0/8", true, 32, 64},
		{"10.0.0.1:1", `for="\"1.2.3.4\"";by=x`, "10.0.0.0/8", true, 32, 64},
		{"10.0.0.1:1", `proto=https`, "10.0.0.0/8", true, 32, 64},
		{"10.0.0.1:1", `;;for=1.2.3.4;;`, "0.0.0.0/0", true, 8, 1},
		{"198.51.100.7:1", "203.0.113.9", "10.0.0.0/8", false, 32, 64},
		{"@", "203.0.113.9", "0.0.0.0/0", false, 32, 64},
		{"192.0.2.1", "", "", false, 32, 64},
		{"[1.2.3.4]:80", "[1.2.3.4]", "1.2.3.4", false, 32, 64},
		{"[::0.0.0.0]:", "0", "::", true, 32, 64},
		{"10.0.0.0", "\xd2,for=0.0.0.0", "10.0.0.0/8", true, 28, 64},
		{"0", "0", "::0%00000/", false, 12, 64},
	} {
		f.Add(s.remote, s.header, s.trusted, s.forwarded, s.v4, s.v6)
	}
	lim := fuzzLimiter(f)
	f.Fuzz(func(t *testing.T, remote, header, trustedList string, forwarded bool, v4b, v6b uint8) {
		v4, v6 := 1+int(v4b)%32, 1+int(v6b)%128
		opts := []httplimit.Option{httplimit.WithIPv4Prefix(v4), httplimit.WithIPv6Prefix(v6)}
		var trusted []netip.Prefix
		for _, s := range strings.Fields(trustedList) {
			// CIDRs and addresses New accepts; others are left out.
			var p netip.Prefix
			if strings.Contains(s, "/") {
				var err error
				if p, err = netip.ParsePrefix(s); err != nil || p.Addr().Is4In6() {
					continue
				}
			} else {
				a, err := netip.ParseAddr(s)
				if err != nil {
					continue
				}
				a = a.WithZone("").Unmap()
				p = netip.PrefixFrom(a, a.BitLen())
			}
			trusted = append(trusted, p.Masked())
			opts = append(opts, httplimit.WithTrustedProxies(s))
		}
		isTrusted := func(ip netip.Addr) bool {
			for _, p := range trusted {
				if p.Contains(ip) {
					return true
				}
			}
			return false
		}
		name := httplimit.HeaderXForwardedFor
		if forwarded {
			name = httplimit.HeaderForwarded
			opts = append(opts, httplimit.WithProxyHeader(name))
		}
		probe, err := newKeyProbe(t, lim, opts...)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		lines := strings.Split(header, "\n")
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = remote
		r.Header[name] = lines
		key, kerr := probe.do(r)

		bare := httptest.NewRequest(http.MethodGet, "/", nil)
		bare.RemoteAddr = remote
		bareKey, bareErr := probe.do(bare)

		if kerr != nil {
			if !errors.Is(kerr, httplimit.ErrNoKey) {
				t.Fatalf("error %v does not wrap ErrNoKey", kerr)
			}
			if key != "" {
				t.Fatalf("key %q decided despite error %v", key, kerr)
			}
		} else {
			checkKeyForm(t, key, v4, v6)
		}

		peer, peerOK := refRemote(remote)
		if !peerOK || !isTrusted(peer) {
			// The header must not matter.
			if key != bareKey || (kerr == nil) != (bareErr == nil) {
				t.Fatalf("untrusted peer %q: key %q, %v with header; %q, %v without", remote, key, kerr, bareKey, bareErr)
			}
			if peerOK && kerr == nil && key != refKey(peer, v4, v6) {
				t.Fatalf("untrusted peer %q: key %q, want %q", remote, key, refKey(peer, v4, v6))
			}
			return
		}
		if bareErr != nil || bareKey != refKey(peer, v4, v6) {
			t.Fatalf("trusted peer %q without header: key %q, %v; want %q", remote, bareKey, bareErr, refKey(peer, v4, v6))
		}
		if !forwarded {
			want, ok := refXFF(peer, lines, isTrusted)
			if !ok && kerr == nil {
				t.Fatalf("X-Forwarded-For %q: a hop read is not an address, yet key %q", header, key)
			}
			if ok && kerr == nil && key != refKey(want, v4, v6) {
				t.Fatalf("X-Forwarded-For %q from %q: key %q, want %q", header, remote, key, refKey(want, v4, v6))
			}
			return
		}
		if kerr == nil && key != refKey(peer, v4, v6) {
			for _, ip := range forCandidates(lines) {
				if key == refKey(ip, v4, v6) {
					return
				}
			}
			t.Fatalf("Forwarded %q from %q: key %q is neither the peer's nor a for= address's", header, remote, key)
		}
	})
}

// FuzzClientKeySpelling writes one client address in every form a peer
// address or a forwarding hop may take (port, brackets, zone, IPv4-mapped,
// expanded, upper case): all of them give the same key.
func FuzzClientKeySpelling(f *testing.F) {
	f.Add([]byte{192, 0, 2, 1}, uint16(4711), "eth0", uint8(32), uint8(64))
	f.Add([]byte{203, 0, 113, 9}, uint16(0), "", uint8(24), uint8(128))
	f.Add([]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6}, uint16(443), "eth0", uint8(32), uint8(64))
	f.Add([]byte{0xfe, 0x80, 15: 1}, uint16(80), "1", uint8(32), uint8(127))
	f.Add([]byte{10: 0xff, 11: 0xff, 12: 10, 15: 1}, uint16(1), "", uint8(8), uint8(96))
	f.Add(make([]byte, 16), uint16(65535), "x y", uint8(31), uint8(0))
	f.Add([]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6}, uint16(0), ",000", uint8(32), uint8(64))
	lim := fuzzLimiter(f)
	f.Fuzz(func(t *testing.T, raw []byte, port uint16, zone string, v4b, v6b uint8) {
		ip, ok := netip.AddrFromSlice(raw)
		if !ok {
			return
		}
		v4, v6 := 1+int(v4b)%32, 1+int(v6b)%128
		want := refKey(ip, v4, v6)
		forms := []string{ip.String(), ip.StringExpanded(), strings.ToUpper(ip.StringExpanded())}
		if ip.Is4() {
			forms = append(forms, "::ffff:"+ip.String(), "::FFFF:"+ip.String())
		}
		// A zone of token characters: a comma or quote would split or end
		// the hop in the header, which is then rightly another hop.
		if !ip.Is4() && !ip.Is4In6() && zone != "" && strings.Trim(zone, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == "" {
			if z, err := netip.ParseAddr(ip.String() + "%" + zone); err == nil && z.Zone() == zone {
				forms = append(forms, z.String())
			}
		}
		var hops, remotes []string // forms with and without a port
		for _, s := range forms {
			a := netip.MustParseAddr(s)
			withPort := netip.AddrPortFrom(a, port).String()
			hops = append(hops, s, withPort)
			remotes = append(remotes, s, withPort)
			if a.Is6() {
				hops = append(hops, "["+s+"]")
			}
		}
		opts := []httplimit.Option{httplimit.WithIPv4Prefix(v4), httplimit.WithIPv6Prefix(v6)}
		direct, err := newKeyProbe(t, lim, opts...)
		if err != nil {
			t.Fatal(err)
		}
		proxies := []httplimit.Option{httplimit.WithTrustedProxies("192.0.2.254", "::1")}
		xff, err := newKeyProbe(t, lim, append(proxies, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		fwd, err := newKeyProbe(t, lim, append(append(proxies, httplimit.WithProxyHeader("forwarded")), opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		check := func(how string, p *keyProbe, r *http.Request) {
			t.Helper()
			if key, err := p.do(r); err != nil || key != want {
				t.Fatalf("%s: key %q, %v; want %q", how, key, err, want)
			}
		}
		for _, remote := range remotes {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = remote
			check("RemoteAddr "+remote, direct, r)
		}
		// Behind a trusted proxy that also appears as the last hop.
		for _, proxy := range []struct{ remote, hop string }{{"192.0.2.254:1", "192.0.2.254"}, {"[::1]:1", "::1"}} {
			for _, h := range hops {
				r := httptest.NewRequest(http.MethodGet, "/", nil)
				r.RemoteAddr = proxy.remote
				r.Header.Set(httplimit.HeaderXForwardedFor, h+", "+proxy.hop)
				check("X-Forwarded-For "+h, xff, r)

				quoted := strings.ReplaceAll(strings.ReplaceAll(h, `\`, `\\`), `"`, `\"`)
				r = httptest.NewRequest(http.MethodGet, "/", nil)
				r.RemoteAddr = proxy.remote
				r.Header.Set(httplimit.HeaderForwarded, `for="`+quoted+`";proto=https, for="[`+proxy.hop+`]"`)
				check("Forwarded "+r.Header.Get(httplimit.HeaderForwarded), fwd, r)
			}
		}
	})
}
