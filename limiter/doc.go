// Package limiter rate-limits by key with the token bucket, over any
// storage.Store.
package limiter
