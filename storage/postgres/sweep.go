package postgres

import (
	"context"
	"time"
)

// Sweep deletes the rows of the table that expired (or were deleted) a
// minute ago or more, in batches of at most 1000 rows read per statement,
// walking the primary key from start to end, and returns how many rows it
// deleted. Each batch is its own short
// statement: it skips rows another client holds locked (a later sweep
// gets them) and never blocks a writer for longer than one batch.
//
// The background sweep calls it every sweep interval; call it yourself
// when the background sweep is disabled (WithSweepInterval with a
// negative interval), for instance from a scheduled job.
func (s *Store) Sweep(ctx context.Context) (int64, error) {
	if err := s.check(ctx, "sweep", ""); err != nil {
		return 0, err
	}
	var total int64
	after := []byte{}
	for {
		var (
			last             []byte
			scanned, deleted int64
		)
		err := s.pool.QueryRow(ctx, s.stmt.sweep, after, sweepBatch, ttlMicros(sweepGrace)).Scan(&last, &scanned, &deleted)
		if err != nil {
			return total, newError("sweep", "", ctx, err)
		}
		total += deleted
		if scanned < sweepBatch || last == nil {
			return total, nil
		}
		after = last
	}
}

// sweepLoop runs Sweep every interval until ctx is cancelled by Close.
// Errors are dropped: the rows stay, read as absent, and the next sweep
// tries again.
func (s *Store) sweepLoop(ctx context.Context, interval time.Duration) {
	defer close(s.sweepDone)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			_, _ = s.Sweep(ctx)
		}
	}
}
