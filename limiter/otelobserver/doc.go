// Package otelobserver turns what a limiter.Limiter does into OpenTelemetry
// metrics: give the Observer that New returns to limiter.WithObserver.
//
// The package uses only the OpenTelemetry metric API
// (go.opentelemetry.io/otel/metric); the application chooses the SDK and
// exporter, and passes its MeterProvider to New.
//
// # Instruments
//
// All are created by a meter named ScopeName.
//
//   - sluice.decisions, an Int64Counter with unit "{decision}": one per
//     decision of AllowN (so of Allow and of each try of Wait) and of
//     Peek, with the attributes sluice.method ("AllowN" or "Peek"),
//     sluice.outcome ("allowed" or "denied"), sluice.cached (a denial
//     served from the limiter's cache, with no store call) and
//     sluice.fallback (decided by the fallback limiter because the store
//     failed). For admitted traffic, select sluice.method="AllowN": a Peek
//     decides nothing and takes nothing.
//   - sluice.decision.duration, a Float64Histogram in seconds ("s"): the
//     wall time of each decision counted by sluice.decisions, store calls
//     included, with the same attributes, so its count equals the counter.
//     Its advised bucket boundaries run from 1µs to 5s; an SDK View
//     overrides them.
//   - sluice.errors, an Int64Counter with unit "{error}": one per call that
//     failed in the store, with limiter.ErrContention, or because its
//     context ended, with sluice.method ("AllowN", "Peek", "Refund" or
//     "Reset") and error.type: "closed",
//     "corrupt", "unavailable" (matching storage.ErrClosed, ErrCorrupt,
//     ErrUnavailable), "contention", "canceled", "deadline_exceeded" (the
//     context errors), or "_OTHER". They are matched in the order closed,
//     corrupt, contention, unavailable, canceled, deadline_exceeded, so an
//     error that matches both ErrUnavailable and a context error (a store
//     call cut short by its context, reported by the driver as
//     ErrUnavailable wrapping the context's error: its outcome is unknown)
//     counts as "unavailable". A call that the fallback limiter then
//     decides counts both here and, with sluice.fallback=true, in
//     sluice.decisions.
//
// Attributes given with WithAttributes are added to every measurement:
// name the limiter there (attribute.String("sluice.limiter.name",
// "login")) when several limiters report to one provider.
//
// # What is not measured
//
//   - The limited key: one time series per key would grow without bound
//     (and keys may identify people). Log denials with their key from
//     your own code if you need them.
//   - Dry run: a limiter made WithDryRun reports its real decisions, so
//     sluice.outcome="denied" counts the calls it would have denied. The
//     Observer adds no attribute of its own for it (limiter.Event.DryRun):
//     mark such a limiter with
//     WithAttributes(attribute.Bool("sluice.dry_run", true)).
//   - Store calls and retries per call: calls decided together in one
//     batch each report the whole batch's store calls, so a sum would
//     count them several times.
//
// # Errors
//
// New returns ErrNilMeterProvider for a nil provider, ErrInvalidAttribute
// for an attribute it cannot use, and the provider's own error, wrapped,
// when an instrument cannot be created.
//
// # Concurrency
//
// An Observer is safe for concurrent use; one may serve several limiters.
// Its methods run on the limiter's caller's goroutine and allocate nothing
// themselves: every attribute set is built once, in New. What a
// measurement then costs is the SDK's.
package otelobserver
