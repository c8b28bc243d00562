package httplimit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/sluice-go/sluice/internal/typednil"
	"github.com/sluice-go/sluice/limiter"
)

// ErrInvalidOption is returned by New when an option's value cannot be
// used: a malformed CIDR, a prefix length out of range, a nil function,
// a cost below 1, or options that contradict each other.
var ErrInvalidOption = errors.New("httplimit: invalid option")

// ErrNoKey is passed to the error handler when no usable key comes from
// a request: the KeyFunc failed (a missing header, a remote address that
// is not an IP, a forwarding header from a trusted proxy that is malformed
// or names no address for the client: "unknown", an obfuscated
// identifier, a Forwarded element without "for") or
// returned a key the limiter refuses (empty or too long). The
// default handler answers 400.
var ErrNoKey = errors.New("httplimit: cannot key request")

// failClosedRetryAfter is the Retry-After of the default 503 answer when
// the store fails: clients come back soon, when the store may be back.
const failClosedRetryAfter = "1"

// Option configures the middleware in New.
type Option func(*config)

type config struct {
	keyFunc     KeyFunc
	keyFuncSet  bool
	ip          ipKeyer
	ipOptionSet []string // IP options given, refused with WithKeyFunc
	trusted     []string
	cost        func(*http.Request) int64
	costSet     int
	deny        http.Handler
	onError     func(http.ResponseWriter, *http.Request, error)
	failOpen    func(*http.Request, error)
	skip        func(*http.Request) bool
	onDecision  func(*http.Request, Result)
	legacy      bool
	policyName  string
	hashSecret  []byte
	fixedCost   int64 // WithCost's n, checked against the buckets
	errs        []error
}

// WithKeyFunc keys requests with f instead of by client IP. Its keys are
// used as they are (with no prefix), unless WithHashedKeys is given. It
// cannot be combined with the options of the IP key (WithTrustedProxies,
// WithProxyHeader, WithIPv4Prefix, WithIPv6Prefix): New refuses them
// together rather than ignore some.
func WithKeyFunc(f KeyFunc) Option {
	return func(c *config) {
		if f == nil {
			c.errs = append(c.errs, errors.New("nil KeyFunc"))
		}
		c.keyFunc, c.keyFuncSet = f, true
	}
}

// WithTrustedProxies names the reverse proxies whose forwarding header is
// believed, as CIDRs ("10.0.0.0/8", "2001:db8::/32") or single addresses.
// Only when the peer (RemoteAddr) is one of them is the header read
// (X-Forwarded-For by default, see WithProxyHeader); the client is then
// the rightmost hop that is not a trusted proxy, so addresses a client
// puts in the header itself are never reached. Without this option, the
// default, forwarding headers are ignored and the peer is the client:
// anyone can write X-Forwarded-For.
func WithTrustedProxies(cidrs ...string) Option {
	return func(c *config) {
		c.ipOptionSet = append(c.ipOptionSet, "WithTrustedProxies")
		c.trusted = append(c.trusted, cidrs...)
	}
}

// WithProxyHeader chooses the header trusted proxies name the client in:
// HeaderXForwardedFor (the default) or HeaderForwarded (RFC 7239, its
// "for" parameters). Only the header the proxies write may be trusted: a
// proxy that appends to X-Forwarded-For passes a client's own Forwarded
// header through untouched, so reading that one would believe the client.
func WithProxyHeader(name string) Option {
	return func(c *config) {
		c.ipOptionSet = append(c.ipOptionSet, "WithProxyHeader")
		switch http.CanonicalHeaderKey(name) {
		case http.CanonicalHeaderKey(HeaderXForwardedFor):
			c.ip.header = HeaderXForwardedFor
		case HeaderForwarded:
			c.ip.header = HeaderForwarded
		default:
			c.errs = append(c.errs, fmt.Errorf("proxy header %q is neither %s nor %s", name, HeaderXForwardedFor, HeaderForwarded))
		}
	}
}

// WithIPv6Prefix sets how many leading bits of an IPv6 client address
// make its key. The default is 64: a host usually holds a whole /64 and
// could otherwise take a new address, and a new bucket, for every
// request. 128 keys each address alone. bits must be 1 to 128.
func WithIPv6Prefix(bits int) Option {
	return func(c *config) {
		c.ipOptionSet = append(c.ipOptionSet, "WithIPv6Prefix")
		if bits < 1 || bits > 128 {
			c.errs = append(c.errs, fmt.Errorf("IPv6 prefix /%d is not between /1 and /128", bits))
		}
		c.ip.v6Bits = bits
	}
}

// WithIPv4Prefix sets how many leading bits of an IPv4 client address
// make its key. The default is 32, each address alone; 24 groups a /24.
// bits must be 1 to 32.
func WithIPv4Prefix(bits int) Option {
	return func(c *config) {
		c.ipOptionSet = append(c.ipOptionSet, "WithIPv4Prefix")
		if bits < 1 || bits > 32 {
			c.errs = append(c.errs, fmt.Errorf("IPv4 prefix /%d is not between /1 and /32", bits))
		}
		c.ip.v4Bits = bits
	}
}

// WithCost sets the tokens every request takes. The default is 1; n must
// be at least 1, and at most the smallest Capacity of the limiter's
// buckets and of its fallback's (limiter.WithFallback), which New checks.
func WithCost(n int64) Option {
	return func(c *config) {
		c.costSet++
		if n < 1 {
			c.errs = append(c.errs, fmt.Errorf("cost %d is below 1", n))
		}
		c.cost = func(*http.Request) int64 { return n }
		c.fixedCost = n
	}
}

// WithCostFunc sets the tokens each request takes, computed from the
// request (say, more for a search than for a read). A cost below 1 or
// above a bucket's capacity is a programming error: the request is
// answered 500 through the error handler, with an error wrapping
// limiter.ErrInvalidCost or limiter.ErrCostExceedsCapacity, and not
// served whatever the failure policy. A cost that only the fallback
// limiter's buckets are too small for is not: while the store fails, such
// a request meets the failure policy (see limiter.WithFallback).
func WithCostFunc(f func(*http.Request) int64) Option {
	return func(c *config) {
		c.costSet++
		if f == nil {
			c.errs = append(c.errs, errors.New("nil cost function"))
		}
		c.cost = f
	}
}

// WithDenyHandler sets the handler that answers a denied request. When it
// runs, the RateLimit-Policy, RateLimit and Retry-After headers are
// already set and FromContext reports the decision; it writes the status
// and body. The default answers 429 Too Many Requests with a JSON body
// {"message": "..."}.
func WithDenyHandler(h http.Handler) Option {
	return func(c *config) {
		if typednil.Is(h) {
			c.errs = append(c.errs, errors.New("nil deny handler"))
		}
		c.deny = h
	}
}

// WithErrorHandler sets the function that answers a request the
// middleware cannot decide and does not serve: err wraps ErrNoKey when no
// key came from the request, the limiter's cost errors when the cost is
// wrong, and the limiter's error otherwise (the store failed, under the
// default fail-closed policy). The default is WriteError. A handler that
// logs and then calls WriteError keeps the default answers. A request
// whose context was canceled before it was decided (its client went
// away) is not passed to h, nor served or reported under WithFailOpen,
// since the store did not fail: it gets WriteError's 503, which a client
// that left never reads.
func WithErrorHandler(h func(w http.ResponseWriter, r *http.Request, err error)) Option {
	return func(c *config) {
		if h == nil {
			c.errs = append(c.errs, errors.New("nil error handler"))
		}
		c.onError = h
	}
}

// WithFailOpen serves requests the limiter cannot decide for any reason
// but their key or cost: the store failed (its error wraps
// storage.ErrUnavailable, storage.ErrClosed or storage.ErrCorrupt), too
// many compare-and-swaps were lost (limiter.ErrContention), the request's
// deadline passed, or any other error came back; but not a request
// canceled before it was decided (see WithErrorHandler). It calls report
// with the request and the error first, so an outage is seen in logs or
// metrics. report must not be nil: a failure is never served silently.
//
// The default is to fail closed: such requests are answered through the
// error handler (503 Service Unavailable with Retry-After: 1). A limiter
// guards something — a login form, a costly endpoint, a paid API — and
// failing open by default would turn every store outage into an unlimited
// window for whoever is being limited. Fail open where availability
// matters more than the limit, and the limit is a courtesy.
func WithFailOpen(report func(r *http.Request, err error)) Option {
	return func(c *config) {
		if report == nil {
			c.errs = append(c.errs, errors.New("nil report function for WithFailOpen"))
		}
		c.failOpen = report
	}
}

// WithSkip exempts requests for which skip returns true (health checks,
// metrics scrapes): they are served at once, neither counted nor given
// rate-limit headers. Every other request is counted, whatever its
// method, CORS preflights too; one denied before a CORS handler behind
// the middleware has run gets no CORS headers, and the browser reports a
// CORS failure rather than the 429. To exempt preflights:
//
//	httplimit.WithSkip(func(r *http.Request) bool { return r.Method == http.MethodOptions })
func WithSkip(skip func(*http.Request) bool) Option {
	return func(c *config) {
		if skip == nil {
			c.errs = append(c.errs, errors.New("nil skip function"))
		}
		c.skip = skip
	}
}

// WithLegacyHeaders adds X-RateLimit-Limit (the binding bucket's
// capacity), X-RateLimit-Remaining (its whole tokens left) and
// X-RateLimit-Reset (seconds, rounded up, until it is full again) to every
// decided response, for clients that predate the RateLimit fields. Reset
// is a delay, not a Unix time. The default is to write only the RateLimit
// fields.
func WithLegacyHeaders() Option {
	return func(c *config) { c.legacy = true }
}

// WithPolicyName sets the policy name written in the RateLimit-Policy and
// RateLimit fields. The default is "default". With several buckets each is
// its own policy, named name-<bucket> ("default-5/10s",
// "default-100/1h"). A name is 1 to 64 printable ASCII characters other
// than '"' and '\'.
func WithPolicyName(name string) Option {
	return func(c *config) {
		if !validPolicyName(name) {
			c.errs = append(c.errs, fmt.Errorf("policy name %q: want 1 to %d printable ASCII characters other than '\"' and '\\'", name, maxPolicyNameLen))
		}
		c.policyName = name
	}
}

// WithOnDecision calls f with every decision the middleware makes, allowed
// or denied, before the request reaches the wrapped handler or the deny
// handler: the place to log decisions or count them. A limiter made
// limiter.WithDryRun lets every request through; f sees
// res.Decision.DryRun set on those it would have denied, which is how a
// new limit is watched before it is enforced (those requests get no
// RateLimit field, only RateLimit-Policy, so clients see no shortage). f runs on the request's
// goroutine and must be quick. The default is no callback.
func WithOnDecision(f func(r *http.Request, res Result)) Option {
	return func(c *config) {
		if f == nil {
			c.errs = append(c.errs, errors.New("nil decision callback"))
		}
		c.onDecision = f
	}
}

// WithHashedKeys makes the middleware pass the limiter
// "hmac:" + base64url(HMAC-SHA256(secret, key)) instead of each key, so
// that IP addresses, user ids and API keys never reach the store in plain
// text, and long header values fit the limiter's key limit. The secret is
// needed because a plain hash of an IPv4 address is undone by trying all
// 2^32 of them; every process that shares the limits must use the same
// secret, and changing it starts every key afresh. The secret must not be
// empty. An empty key is still refused (ErrNoKey), not hashed. The
// default is plain keys.
func WithHashedKeys(secret []byte) Option {
	return func(c *config) {
		if len(secret) == 0 {
			c.errs = append(c.errs, errors.New("empty secret for WithHashedKeys"))
		}
		c.hashSecret = append([]byte(nil), secret...)
	}
}

// middleware is one configured rate limiter in front of handlers.
type middleware struct {
	lim      *limiter.Limiter
	key      KeyFunc
	cost     func(*http.Request) int64
	deny     http.Handler
	onError  func(http.ResponseWriter, *http.Request, error)
	failOpen func(*http.Request, error)
	skip     func(*http.Request) bool
	decided  func(*http.Request, Result)
	legacy   bool
	secret   []byte
	policy   policy
	// fallback describes the buckets of lim's fallback limiter, which
	// decides while the store fails (Decision.Fallback); nil without one.
	fallback *policy
}

// New returns middleware that limits each request with lim before it
// reaches the wrapped handler, keyed by client IP unless an option says
// otherwise. An allowed request is served with the RateLimit-Policy and
// RateLimit headers set; a denied one gets them too, with Retry-After,
// from the deny handler (429 by default); a request whose key or decision
// fails goes to the error handler, or is served under WithFailOpen.
//
// New returns an error wrapping ErrInvalidOption when lim is nil or an
// option cannot be used, so that a misconfiguration fails at start-up
// rather than on the first request.
func New(lim *limiter.Limiter, opts ...Option) (func(http.Handler) http.Handler, error) {
	if lim == nil {
		return nil, fmt.Errorf("%w: nil limiter", ErrInvalidOption)
	}
	buckets := lim.Buckets()
	if len(buckets) == 0 {
		return nil, fmt.Errorf("%w: a zero Limiter; make it with limiter.New", ErrInvalidOption)
	}
	c := config{
		ip:         ipKeyer{header: HeaderXForwardedFor, v4Bits: 32, v6Bits: 64},
		cost:       func(*http.Request) int64 { return 1 },
		deny:       http.HandlerFunc(writeDenied),
		onError:    WriteError,
		policyName: "default",
	}
	for _, opt := range opts {
		if opt == nil {
			c.errs = append(c.errs, errors.New("nil Option"))
			continue
		}
		opt(&c)
	}
	if err := c.validate(buckets); err != nil {
		return nil, err
	}
	if fb := lim.Fallback(); fb != nil {
		if err := c.validateCost(fb.Buckets(), "the fallback limiter's ", " while the store fails"); err != nil {
			return nil, err
		}
	}
	m := &middleware{
		lim:      lim,
		key:      c.keyFunc,
		cost:     c.cost,
		deny:     c.deny,
		onError:  c.onError,
		failOpen: c.failOpen,
		skip:     c.skip,
		decided:  c.onDecision,
		legacy:   c.legacy,
		secret:   c.hashSecret,
		policy:   newPolicy(c.policyName, buckets),
	}
	if !c.keyFuncSet {
		ip := c.ip
		for _, s := range c.trusted {
			p, err := parseTrusted(s)
			if err != nil {
				return nil, err
			}
			ip.trusted = append(ip.trusted, p)
		}
		m.key = ip.key
	}
	if fb := lim.Fallback(); fb != nil {
		p := newPolicy(c.policyName, fb.Buckets())
		m.fallback = &p
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			m.serve(next, w, r)
		})
	}, nil
}

// validate reports the first problem with the options.
func (c *config) validate(buckets []limiter.Bucket) error {
	if len(c.errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidOption, c.errs[0])
	}
	if c.keyFuncSet && len(c.ipOptionSet) > 0 {
		return fmt.Errorf("%w: %s applies to the default IP key, not to WithKeyFunc", ErrInvalidOption, c.ipOptionSet[0])
	}
	if c.costSet > 1 {
		return fmt.Errorf("%w: WithCost and WithCostFunc given %d times; give one", ErrInvalidOption, c.costSet)
	}
	return c.validateCost(buckets, "", "")
}

// validateCost reports a fixed cost (WithCost) above the capacity of one
// of buckets; whose names their owner in the error, and when, if not "",
// completes "no request could pass" with when that is.
func (c *config) validateCost(buckets []limiter.Bucket, whose, when string) error {
	for _, b := range buckets {
		if c.fixedCost > b.Capacity {
			return fmt.Errorf("%w: cost %d exceeds the capacity of %sbucket %v: no request could pass%s", ErrInvalidOption, c.fixedCost, whose, b, when)
		}
	}
	return nil
}

// parseTrusted reads a CIDR or a single address.
func parseTrusted(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%w: trusted proxy %q: %w", ErrInvalidOption, s, err)
		}
		if p.Addr().Is4In6() {
			if p.Bits() < 96 {
				return netip.Prefix{}, fmt.Errorf("%w: trusted proxy %q: an IPv4-mapped prefix needs at least 96 bits", ErrInvalidOption, s)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%w: trusted proxy %q is neither a CIDR nor an IP address", ErrInvalidOption, s)
	}
	ip = ip.WithZone("").Unmap()
	return netip.PrefixFrom(ip, ip.BitLen()), nil
}

// serve decides one request.
func (m *middleware) serve(next http.Handler, w http.ResponseWriter, r *http.Request) {
	if m.skip != nil && m.skip(r) {
		next.ServeHTTP(w, r)
		return
	}
	clearFields(w.Header())
	key, err := m.key(r)
	if err != nil {
		m.onError(w, r, fmt.Errorf("%w: %w", ErrNoKey, err))
		return
	}
	if m.secret != nil {
		if key == "" {
			// Refused before hashing, as the limiter refuses it without:
			// the hash of "" is a key like any other, and every request
			// without one would share its bucket.
			m.onError(w, r, fmt.Errorf("%w: %w: empty key", ErrNoKey, limiter.ErrInvalidKey))
			return
		}
		key = hashKey(m.secret, key)
	}
	cost := m.cost(r)
	d, err := m.lim.AllowN(r.Context(), key, cost)
	if err != nil {
		m.fail(next, w, r, err)
		return
	}
	p := &m.policy
	if d.Fallback && m.fallback != nil {
		p = m.fallback // the fallback's buckets decided
	}
	if d.DryRun {
		// Allowed only because the limit is not enforced yet: the client
		// is not told of a shortage it does not meet.
		w.Header().Set(HeaderRateLimitPolicy, p.field)
	} else {
		p.write(w.Header(), d, cost, m.legacy)
	}
	res := Result{Key: key, Cost: cost, Decision: d}
	if m.decided != nil {
		m.decided(r, res)
	}
	r = r.WithContext(context.WithValue(r.Context(), resultKey{}, res))
	if !d.Allowed {
		w.Header().Set(HeaderRetryAfter, retryAfter(d.RetryAfter))
		m.deny.ServeHTTP(w, r)
		return
	}
	next.ServeHTTP(w, r)
}

// fail handles a request the limiter returned an error for.
func (m *middleware) fail(next http.Handler, w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The request was canceled, most often because its client went
		// away: the store did not fail, so nothing is reported or served.
		// Whoever may still be listening is told it was not decided.
		WriteError(w, r, err)
		return
	case errors.Is(err, limiter.ErrInvalidKey):
		m.onError(w, r, fmt.Errorf("%w: %w", ErrNoKey, err))
		return
	case errors.Is(err, limiter.ErrInvalidCost), errors.Is(err, limiter.ErrCostExceedsCapacity):
		m.onError(w, r, err)
		return
	}
	w.Header().Set(HeaderRateLimitPolicy, m.policy.field)
	if m.failOpen != nil {
		m.failOpen(r, err)
		next.ServeHTTP(w, r)
		return
	}
	m.onError(w, r, err)
}

// Result is what the middleware decided for a request, available to the
// handlers it calls through FromContext.
type Result struct {
	// Key is the key passed to the limiter (hashed under WithHashedKeys).
	Key string
	// Cost is the tokens the request asked for.
	Cost int64
	// Decision is the limiter's answer.
	Decision limiter.Decision
}

type resultKey struct{}

// FromContext returns the decision the middleware made for the request
// whose context ctx is, as seen by the wrapped handler or the deny
// handler. It reports false for a request the middleware did not decide:
// skipped, served under WithFailOpen, or not behind the middleware.
func FromContext(ctx context.Context) (Result, bool) {
	res, ok := ctx.Value(resultKey{}).(Result)
	return res, ok
}

// WriteError is the default error handler. It answers with a JSON body
// {"message": "..."} and the status the error calls for:
//   - 400 Bad Request when err wraps ErrNoKey, naming what is missing;
//   - 500 Internal Server Error when err wraps limiter.ErrInvalidCost or
//     limiter.ErrCostExceedsCapacity (the cost function is wrong);
//   - 503 Service Unavailable with Retry-After: 1 otherwise (the store
//     failed); the error's text is not shown to the client.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ErrNoKey):
		writeJSON(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, limiter.ErrInvalidCost), errors.Is(err, limiter.ErrCostExceedsCapacity):
		writeJSON(w, http.StatusInternalServerError, "internal server error")
	default:
		w.Header().Set(HeaderRetryAfter, failClosedRetryAfter)
		writeJSON(w, http.StatusServiceUnavailable, "rate limiter unavailable, retry later")
	}
}

// writeDenied is the default deny handler.
func writeDenied(w http.ResponseWriter, r *http.Request) {
	msg := "rate limit exceeded, retry in " + w.Header().Get(HeaderRetryAfter) + " s"
	writeJSON(w, http.StatusTooManyRequests, msg)
}

// writeJSON answers status with {"message": msg}.
func writeJSON(w http.ResponseWriter, status int, msg string) {
	body, _ := json.Marshal(struct {
		Message string `json:"message"`
	}{msg}) // a struct of one string always encodes
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
