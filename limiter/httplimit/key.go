package httplimit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// KeyFunc returns the key a request is limited by: requests with the same
// key share one set of buckets. An error means the request cannot be
// keyed; the middleware then answers it through the error handler (400 by
// default, with the error's text, after "httplimit: cannot key request: ")
// without serving or counting it.
type KeyFunc func(*http.Request) (string, error)

// Key prefixes, so that keys of different kinds never collide in one
// limiter.
const (
	ipKeyPrefix     = "ip:"
	headerKeyPrefix = "h:"
	hashedKeyPrefix = "hmac:"
)

// KeyByHeader returns a KeyFunc that keys requests by the value of the
// named header, for an API key or a user id set by an authenticating
// proxy. The key is "h:" + the header name in lower case + ":" + the
// value (its first line when the header is repeated), so "X-API-Key:
// abc" becomes "h:x-api-key:abc".
//
// A request without the header, or with an empty value, is an error: the
// middleware answers it 400 by default rather than falling back to some
// shared key that every such request would drain, or to the client's IP
// that would let a client choose its own bucket. Put the middleware after
// the code that rejects unauthenticated requests, or key those by IP with
// a second middleware.
//
// Keys reach the store in plain text; see WithHashedKeys.
func KeyByHeader(name string) KeyFunc {
	canonical := http.CanonicalHeaderKey(name)
	prefix := headerKeyPrefix + strings.ToLower(canonical) + ":"
	return func(r *http.Request) (string, error) {
		v := r.Header.Get(canonical)
		if v == "" {
			return "", fmt.Errorf("missing header %s", canonical)
		}
		return prefix + v, nil
	}
}

// ipKeyer is the default KeyFunc: the client's address, found in
// RemoteAddr or, behind trusted proxies, in their forwarding header, then
// grouped into a prefix.
type ipKeyer struct {
	trusted []netip.Prefix
	header  string // HeaderXForwardedFor or HeaderForwarded
	v4Bits  int
	v6Bits  int
}

// key implements KeyFunc.
func (k *ipKeyer) key(r *http.Request) (string, error) {
	ip, err := k.clientIP(r)
	if err != nil {
		return "", err
	}
	bits := k.v6Bits
	if ip.Is4() {
		bits = k.v4Bits
	}
	if bits == ip.BitLen() {
		return ipKeyPrefix + ip.String(), nil
	}
	p, err := ip.Prefix(bits)
	if err != nil { // bits were checked in New
		return "", fmt.Errorf("group %v by /%d: %w", ip, bits, err)
	}
	return ipKeyPrefix + p.String(), nil
}

// clientIP returns the peer's address, or, when the peer is a trusted
// proxy, the rightmost hop of the forwarding header that is not trusted.
// When every hop is trusted, the leftmost one is the client. A hop that
// names no address ("unknown", an obfuscated identifier, a Forwarded
// element without "for") is an error, as a malformed one is: see ErrNoKey.
func (k *ipKeyer) clientIP(r *http.Request) (netip.Addr, error) {
	peer, err := parseRemoteAddr(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, err
	}
	if !k.isTrusted(peer) {
		return peer, nil
	}
	forwarded := k.header == HeaderForwarded
	var hops []string
	if forwarded {
		hops = forwardedElements(r.Header.Values(HeaderForwarded))
	} else {
		hops = listValues(r.Header.Values(HeaderXForwardedFor))
	}
	// Hops are read from the right, and only as far as the walk goes: what
	// a client wrote left of the first hop it does not control is never
	// read, malformed or not.
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		hop := hops[i]
		if forwarded {
			v, err := forwardedFor(hop)
			if err != nil {
				return netip.Addr{}, fmt.Errorf("%w: element %d of %d, %q: %w", errForwardedSyntax, i+1, len(hops), hop, err)
			}
			hop = stripObfuscatedPort(v)
		}
		ip, err := parseHop(hop)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("%s hop %d of %d: %w", k.header, i+1, len(hops), err)
		}
		client = ip
		if !k.isTrusted(ip) {
			break
		}
	}
	return client, nil
}

func (k *ipKeyer) isTrusted(ip netip.Addr) bool {
	for _, p := range k.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// stripObfuscatedPort removes an obfuscated port from a Forwarded node
// ("192.0.2.1:_p1", "[2001:db8::1]:_p1"; RFC 7239, section 6.3), which
// names no port the key could use anyway.
func stripObfuscatedPort(node string) string {
	node = strings.TrimSpace(node)
	i := strings.LastIndexByte(node, ':')
	if i < 0 || i+2 >= len(node) || node[i+1] != '_' {
		return node // no port, or not an obfuscated one ("_" alone is not)
	}
	for _, c := range []byte(node[i+2:]) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return node
		}
	}
	host := node[:i]
	if strings.HasSuffix(host, "]") || strings.Count(host, ":") == 0 {
		return host
	}
	return node // a bare IPv6 address: the colon is its own
}

// parseRemoteAddr reads the peer's address from http.Request.RemoteAddr
// ("ip:port", or a bare ip as some test servers set it).
func parseRemoteAddr(addr string) (netip.Addr, error) {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("remote address %q is not an IP address", addr)
	}
	return ip.WithZone("").Unmap(), nil
}

// parseHop reads one forwarding hop: an IP address, with or without a
// port ("192.0.2.1:4711", "[2001:db8::1]:4711").
func parseHop(hop string) (netip.Addr, error) {
	hop = strings.TrimSpace(hop)
	if ip, err := netip.ParseAddr(hop); err == nil {
		return ip.WithZone("").Unmap(), nil
	}
	if ap, err := netip.ParseAddrPort(hop); err == nil {
		return ap.Addr().WithZone("").Unmap(), nil
	}
	if strings.HasPrefix(hop, "[") && strings.HasSuffix(hop, "]") {
		if ip, err := netip.ParseAddr(hop[1 : len(hop)-1]); err == nil {
			return ip.WithZone("").Unmap(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%q is not an IP address", hop)
}

// listValues splits comma-separated header lines into their elements, in
// order.
func listValues(lines []string) []string {
	var out []string
	for _, line := range lines {
		for v := range strings.SplitSeq(line, ",") {
			if v = strings.TrimSpace(v); v != "" {
				out = append(out, v)
			}
		}
	}
	return out
}

// errForwardedSyntax is returned for a Forwarded header that does not
// follow RFC 7239's grammar.
var errForwardedSyntax = errors.New("malformed Forwarded header")

// forwardedElements splits the Forwarded header lines into their
// elements (RFC 7239, section 4), in order, at the commas outside quoted
// strings, leaving out empty ones, which the list syntax allows. A quoted
// string left open runs to the end of its line, so that an element a
// client leaves unterminated swallows what a proxy appends after it on the
// line and makes it malformed, never another hop.
func forwardedElements(lines []string) []string {
	var out []string
	add := func(e string) {
		if e = strings.Trim(e, " \t"); e != "" {
			out = append(out, e)
		}
	}
	for _, line := range lines {
		start, quoted := 0, false
		for i := 0; i < len(line); i++ {
			switch c := line[i]; {
			case quoted && c == '\\':
				i++ // the escaped byte
			case c == '"':
				quoted = !quoted
			case !quoted && c == ',':
				add(line[start:i])
				start = i + 1
			}
		}
		add(line[start:])
	}
	return out
}

// forwardedFor returns the "for" value of one Forwarded element (pairs
// separated by ';', of which some may be empty), or "" (which no address
// parses from) when it has none. Values may be tokens or quoted strings;
// parameter names are case-insensitive.
func forwardedFor(element string) (string, error) {
	p := fwdParser{s: element}
	var forValue string
	for {
		p.space()
		if p.done() {
			return forValue, nil
		}
		if p.eat(';') {
			continue // an empty pair
		}
		name := p.token()
		if name == "" {
			return "", fmt.Errorf("expected a parameter name at byte %d", p.i)
		}
		if !p.eat('=') {
			return "", fmt.Errorf("expected '=' at byte %d", p.i)
		}
		value, err := p.value()
		if err != nil {
			return "", err
		}
		if strings.EqualFold(name, "for") {
			forValue = value
		}
		p.space()
		if !p.done() && !p.eat(';') {
			return "", fmt.Errorf("expected ';' at byte %d", p.i)
		}
	}
}

// fwdParser reads one Forwarded element.
type fwdParser struct {
	s string
	i int
}

func (p *fwdParser) done() bool { return p.i >= len(p.s) }

func (p *fwdParser) eat(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *fwdParser) space() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

// value reads a token or a quoted string (with backslash escapes).
func (p *fwdParser) value() (string, error) {
	if !p.eat('"') {
		if v := p.token(); v != "" {
			return v, nil
		}
		return "", fmt.Errorf("expected a value at byte %d", p.i)
	}
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		p.i++
		switch c {
		case '"':
			return b.String(), nil
		case '\\':
			if p.i == len(p.s) {
				return "", errors.New("unterminated escape")
			}
			b.WriteByte(p.s[p.i])
			p.i++
		default:
			b.WriteByte(c)
		}
	}
	return "", errors.New("unterminated quoted string")
}

// token reads an RFC 9110 token.
func (p *fwdParser) token() string {
	start := p.i
	for p.i < len(p.s) && isTokenChar(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i]
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// hashKey replaces key by a keyed hash of it, so the store never sees
// the plain key.
func hashKey(secret []byte, key string) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(key))
	return hashedKeyPrefix + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}
