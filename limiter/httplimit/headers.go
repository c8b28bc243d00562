package httplimit

import (
	"math/bits"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-go/sluice/limiter"
)

// Header names the middleware reads and writes, spelt as their
// specifications spell them. Field names are case-insensitive; net/http
// writes them in its canonical form ("Ratelimit-Policy") on HTTP/1.1 and
// in lower case on HTTP/2.
const (
	// HeaderRateLimitPolicy carries the limiter's buckets as quota
	// policies: `"default";q=5;w=10`.
	HeaderRateLimitPolicy = "RateLimit-Policy"
	// HeaderRateLimit carries the state of the binding bucket:
	// `"default";r=4;t=2`.
	HeaderRateLimit = "RateLimit"
	// HeaderRetryAfter is set on denials, in whole seconds (RFC 9110,
	// section 10.2.3), and on 503 answers when the store fails.
	HeaderRetryAfter = "Retry-After"
	// HeaderXRateLimitLimit, HeaderXRateLimitRemaining and
	// HeaderXRateLimitReset are the older, unstandardised trio written
	// with WithLegacyHeaders.
	HeaderXRateLimitLimit     = "X-RateLimit-Limit"
	HeaderXRateLimitRemaining = "X-RateLimit-Remaining"
	HeaderXRateLimitReset     = "X-RateLimit-Reset"
	// HeaderXForwardedFor and HeaderForwarded (RFC 7239) name the client
	// behind trusted proxies; see WithTrustedProxies.
	HeaderXForwardedFor = "X-Forwarded-For"
	HeaderForwarded     = "Forwarded"
)

// ownFields are the fields the middleware writes.
var ownFields = [...]string{
	HeaderRateLimitPolicy,
	HeaderRateLimit,
	HeaderRetryAfter,
	HeaderXRateLimitLimit,
	HeaderXRateLimitRemaining,
	HeaderXRateLimitReset,
}

// clearFields removes the fields the middleware writes, in any spelling
// (Header.Set's canonical one, or another set through the map, as HTTP/2
// code may), so that a request it decides carries its fields only, and
// none that a middleware in front of it wrote (see the package doc on
// stacking).
func clearFields(h http.Header) {
	for name := range h {
		for _, f := range ownFields {
			if strings.EqualFold(name, f) {
				delete(h, name)
				break
			}
		}
	}
}

// maxPolicyNameLen bounds WithPolicyName.
const maxPolicyNameLen = 64

// policy is what the middleware writes about a limiter's buckets: the
// RateLimit-Policy value, fixed for the middleware's life, and each
// bucket's name in it.
type policy struct {
	buckets []limiter.Bucket // the limiter's canonical order
	names   []string         // serialized sf-strings, quotes included
	field   string           // the RateLimit-Policy value
}

// newPolicy names the buckets: name alone for one bucket, name-<bucket>
// ("default-100/1h") for each of several.
func newPolicy(name string, buckets []limiter.Bucket) policy {
	p := policy{buckets: buckets}
	items := make([]string, len(buckets))
	for i, b := range buckets {
		n := name
		if len(buckets) > 1 {
			n = name + "-" + b.String()
		}
		p.names = append(p.names, `"`+n+`"`)
		items[i] = p.names[i] + ";q=" + strconv.FormatInt(b.Capacity, 10) + ";w=" + strconv.FormatInt(ceilSeconds(b.Period), 10)
	}
	p.field = strings.Join(items, ", ")
	return p
}

// validPolicyName reports whether name can be written as a structured
// field string without escapes: printable ASCII other than '"' and '\'.
func validPolicyName(name string) bool {
	if name == "" || len(name) > maxPolicyNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// binding returns the index of the bucket a Decision describes. Buckets
// that pay the same costs from the same start hold the fewest tokens in
// the slowest-refilling one among those of equal capacity, and the
// limiter breaks ties towards it, so the bucket with Capacity equal to
// d.Limit and the longest Period is the one.
func (p *policy) binding(d limiter.Decision) int {
	best := -1
	for i, b := range p.buckets {
		if b.Capacity == d.Limit && (best < 0 || b.Period > p.buckets[best].Period) {
			best = i
		}
	}
	return max(best, 0)
}

// write sets the RateLimit-Policy and RateLimit fields for d, the
// Decision on a request of the given cost, and the legacy trio when asked.
func (p *policy) write(h http.Header, d limiter.Decision, cost int64, legacy bool) {
	i := p.binding(d)
	var t int64
	if !d.Allowed && cost == 1 {
		// Until then every request is denied, whichever bucket is short:
		// t is the wait exactly, as in Retry-After.
		t = ceilSeconds(d.RetryAfter)
	} else {
		t = ceilSeconds(nextToken(p.buckets[i], d.Remaining, d.ResetAfter))
	}
	h.Set(HeaderRateLimitPolicy, p.field)
	h.Set(HeaderRateLimit, p.names[i]+";r="+strconv.FormatInt(d.Remaining, 10)+";t="+strconv.FormatInt(t, 10))
	if legacy {
		h.Set(HeaderXRateLimitLimit, strconv.FormatInt(d.Limit, 10))
		h.Set(HeaderXRateLimitRemaining, strconv.FormatInt(d.Remaining, 10))
		h.Set(HeaderXRateLimitReset, strconv.FormatInt(ceilSeconds(d.ResetAfter), 10))
	}
}

// nextToken returns a wait, at most a nanosecond short, until bucket b,
// holding remaining whole tokens and full again after reset, gains its
// next whole token: until then the client can spend no more than
// remaining. The bucket refills one token per Period/Capacity, so the next
// token comes (Capacity-remaining-1) tokens' worth of time before the
// bucket is full.
//
// reset is rounded up from the exact wait, and the tokens' worth is
// rounded down here, so reset minus it can exceed the wait by a
// nanosecond; a nanosecond less can fall short of it by one. Short is the
// safe side: t in whole seconds, rounded up, then never promises a wait
// the bucket does not keep.
func nextToken(b limiter.Bucket, remaining int64, reset time.Duration) time.Duration {
	if remaining < 0 || remaining >= b.Capacity {
		return 0
	}
	// (C-r-1)*P/C without overflow: C-r-1 < C, so the quotient fits.
	hi, lo := bits.Mul64(uint64(b.Capacity-remaining-1), uint64(b.Period))
	q, _ := bits.Div64(hi, lo, uint64(b.Capacity))
	return max(reset-time.Duration(q)-1, 0)
}

// ceilSeconds returns d in whole seconds, rounded up; 0 for d <= 0.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	s := int64(d / time.Second)
	if d%time.Second != 0 {
		s++
	}
	return s
}

// retryAfter is the Retry-After value of a denial: the wait in whole
// seconds, rounded up, and never 0, so that a client that honours it is
// never early and never told to retry at once.
func retryAfter(d time.Duration) string {
	return strconv.FormatInt(max(ceilSeconds(d), 1), 10)
}
