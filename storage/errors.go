package storage

import "errors"

// ErrUnavailable is returned when the backend cannot be reached or did not
// answer in time, including when a write may or may not have landed. A
// driver wraps it together with its native cause, so that both
// errors.Is(err, ErrUnavailable) and errors.As on the driver's own error
// type work.
var ErrUnavailable = errors.New("storage: unavailable")

// ErrClosed is returned by every method of a Store after Close.
var ErrClosed = errors.New("storage: closed")

// ErrCorrupt is returned when a stored value cannot be read: it was not
// written by sluice, was truncated, or comes from an incompatible version.
// Nothing is overwritten when it is returned.
var ErrCorrupt = errors.New("storage: corrupt record")
