// Package httplimit is net/http middleware that rate-limits requests with
// a limiter.Limiter: one line in front of any handler.
//
//	limit, err := httplimit.New(lim)
//	if err != nil {
//		log.Fatal(err)
//	}
//	http.ListenAndServe(addr, limit(mux))
//
// # What a client sees
//
// An allowed request is served with two header fields of the IETF draft
// "RateLimit header fields for HTTP", draft-ietf-httpapi-ratelimit-headers-11
// (May 2026), describing the limiter's buckets as quota policies and the
// state of the binding bucket (the one with the fewest tokens left):
//
//	RateLimit-Policy: "default";q=5;w=10
//	RateLimit: "default";r=4;t=2
//
// q is a bucket's Capacity and w its Period in seconds (rounded up); r is
// the whole tokens left and t the seconds, rounded up, until the next
// token arrives: until it does the client can spend no more than r. A
// limiter with several buckets lists each as a policy named
// "default-<bucket>" and reports the binding one in RateLimit, so r and t
// are that bucket's; t seconds from now another bucket may still hold the
// next request back, and the answer to that request then gives the wait
// exactly (t and Retry-After). With one bucket, t seconds from now the
// client can spend at least one more, but for a token due less than a
// nanosecond after a whole second: t is worked out from the Decision,
// whose waits are rounded to the nanosecond, and then falls a second
// short. No partition key (pk) is sent: keys may identify people.
//
// A denied request gets the same fields and Retry-After, the wait in
// whole seconds rounded up and never 0, from the deny handler (by default
// 429 Too Many Requests with a JSON body {"message": "..."}). For a cost-1
// request t then equals Retry-After: the wait until a request can pass,
// whichever bucket holds it back. WithLegacyHeaders adds the older
// X-RateLimit-Limit, X-RateLimit-Remaining and X-RateLimit-Reset. Under
// limiter.WithDryRun, a request served only because the limit is not
// enforced yet gets RateLimit-Policy alone: no RateLimit field tells its
// client of a shortage it does not meet. Under limiter.WithFallback, a
// request the fallback limiter decided while the store failed
// (Decision.Fallback) is described with the fallback's buckets, in
// RateLimit-Policy as in RateLimit: they are the limit the client meets
// then.
//
// net/http writes field names in its canonical form, "Ratelimit-Policy",
// on HTTP/1.1 (and in lower case on HTTP/2); field names are
// case-insensitive, so this is the same field. Read them with
// http.Header.Get and the Header constants.
//
// # Keys
//
// By default requests are keyed by the client's IP address: the peer
// (RemoteAddr), because forwarding headers are written by whoever sends
// the request. Behind reverse proxies, list them with WithTrustedProxies:
// the forwarding header (X-Forwarded-For, or Forwarded with
// WithProxyHeader) is then read only from a trusted peer, and the client
// is the rightmost hop that is not a trusted proxy. IPv6 clients are
// grouped by /64 (WithIPv6Prefix), since one host may use any address of
// its /64; IPv4 clients are keyed alone (WithIPv4Prefix). The keys look
// like "ip:192.0.2.1" and "ip:2001:db8:1:2::/64".
//
// KeyByHeader keys by a header (an API key, a user id), WithKeyFunc by
// anything. Keys reach the store in plain text: WithHashedKeys replaces
// them by a keyed hash, which also suits long header values.
//
// # Errors
//
// New returns ErrInvalidOption for options that cannot work (a malformed
// CIDR, a prefix length out of range, a fixed cost above the capacity of a
// bucket of the limiter or of its fallback, IP options together with
// WithKeyFunc), so mistakes surface at start-up.
//
// A request that yields no key (the KeyFunc failed, or its key is empty or
// too long) is answered 400 with an error wrapping ErrNoKey, and neither
// served nor counted: it is the request that is wrong, and a fallback key
// would let such requests drain a shared bucket. A cost function that
// returns a cost the limiter refuses is a bug: 500. The error handler
// (WithErrorHandler; default WriteError) gives those answers.
//
// When the store fails, the middleware fails closed by default: 503
// Service Unavailable with Retry-After: 1 from the error handler, since a
// limiter that guards a login form must not vanish with its store.
// WithFailOpen serves such requests instead and reports each error to a
// function, for limits that are a courtesy rather than a guard. Either way
// the failure is never silent. A limiter made WithDryRun turns denials
// into allows, not store failures: to serve every request during a dry
// run, add WithFailOpen too.
//
// # Concurrency
//
// The middleware is safe for concurrent use, as is the Limiter; many
// processes behind a load balancer share limits through a shared store
// (Redis, PostgreSQL).
//
// # Caveats
//
//   - Requests exempted with WithSkip get no rate-limit fields from this
//     middleware, and keep any that a middleware in front of it set.
//   - Each middleware removes the rate-limit fields already set (RateLimit,
//     RateLimit-Policy, Retry-After and the legacy trio) before it writes
//     its own. When two are stacked (by IP in front of by account, say), a
//     request the inner one decides carries only the inner one's fields,
//     and one the outer one denies carries the outer one's; one the inner
//     one skips (WithSkip) keeps the outer one's.
//   - A request answered 503 after a store failure, or served under
//     WithFailOpen, carries RateLimit-Policy but no RateLimit: there is no
//     decision to report. A 400 (no key) or 500 (a bad cost) carries
//     neither.
//   - w in RateLimit-Policy is whole seconds: a bucket refilling in less
//     than a second is written with w=1.
//   - Trusting a proxy means trusting every address it forwards: list only
//     proxies you run, and configure them to append the peer's address to
//     the header you read.
package httplimit
