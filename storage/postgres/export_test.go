package postgres

import (
	"context"
	"time"
)

// PinSwapForm makes s send every compare-and-swap with an expected
// version in one form, combined or two-step, whatever the contention.
func PinSwapForm(s *Store, combined bool) {
	if combined {
		s.form = swapCombined
	} else {
		s.form = swapTwoStep
	}
}

// TTLMicros is the time to live sent to the server for ttl.
func TTLMicros(ttl time.Duration) int64 { return ttlMicros(ttl) }

// Contention returns the score that chooses the form of a swap.
func Contention(s *Store) int32 { return s.contention.Load() }

// LossWeight and MaxContention are the score's constants.
const (
	LossWeight    = lossWeight
	MaxContention = maxContention
)

// Sweeping reports whether s runs a background sweep.
func Sweeping(s *Store) bool { return s.stopSweep != nil }

// Queued returns how many compare-and-swaps of s wait to be sent together.
func Queued(s *Store) int { return s.writes.Queued() }

// InsertSQL is the statement of a CompareAndSwap with expected 0.
func InsertSQL(s *Store) string { return s.stmt.insert }

// GetSQL is the statement of Get.
func GetSQL(s *Store) string { return s.stmt.get }

// InsertInFailedBatch sends an insert of value under key in a transaction
// with one other call, as a batch does, on ctx, after marking it to be
// sent again, as a transaction that rolled back marks a stale insert. It
// returns whether the call is still marked and its error.
func InsertInFailedBatch(ctx context.Context, s *Store, key string, value []byte) (again bool, err error) {
	a := &casCall{key: key, value: value, micros: 3_600_000_000, again: true}
	b := &casCall{key: key + "-other", value: value, micros: 3_600_000_000}
	s.casTransaction(ctx, []*casCall{a, b}, true)
	return a.again, a.err
}
