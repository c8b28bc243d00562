package bolt

import (
	"bytes"
	"time"

	"go.etcd.io/bbolt"
)

const (
	// sweepMaxDeletes bounds the deletes of one janitor write transaction,
	// so that writers never wait behind a long one.
	sweepMaxDeletes = 1000

	// sweepMaxScan bounds the records one janitor read transaction looks
	// at before it lets go and resumes in a new one.
	sweepMaxScan = 10000
)

// janitor removes expired records every s.interval until Close.
func (s *Store) janitor() {
	defer s.wg.Done()
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			// An error (say, the caller of New closed the database) is
			// retried on the next tick; expired records read as absent
			// meanwhile, so nothing depends on the sweep succeeding.
			_, _ = s.sweep()
		}
	}
}

// sweep walks the whole bucket once and removes the records that have
// expired, stopping early when the store closes. It returns how many it
// removed. Each step finds at most sweepMaxDeletes expired records among
// at most sweepMaxScan in a read transaction, then deletes those that are
// still expired in a short write transaction.
func (s *Store) sweep() (int, error) {
	var from []byte // resume here; nil: from the first key
	total := 0
	for {
		select {
		case <-s.stop:
			return total, nil
		default:
		}
		doomed, next, err := s.findExpired(from, time.Now().UnixNano())
		if err != nil {
			return total, err
		}
		if len(doomed) > 0 {
			n, err := s.deleteExpired(doomed, time.Now().UnixNano())
			total += n
			if err != nil {
				return total, err
			}
		}
		if next == nil {
			return total, nil
		}
		from = next
	}
}

// findExpired returns copies of the keys of expired records from from on,
// and the key to resume at (nil at the end of the bucket). Values not in
// this package's layout and nested buckets are left alone.
func (s *Store) findExpired(from []byte, now int64) (doomed [][]byte, next []byte, err error) {
	err = view(s.db, func(tx *bbolt.Tx) error {
		b := tx.Bucket(s.bucket)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		k, v := c.First()
		if from != nil {
			k, v = c.Seek(from)
		}
		for scanned := 0; k != nil; k, v = c.Next() {
			if scanned == sweepMaxScan || len(doomed) == sweepMaxDeletes {
				next = bytes.Clone(k)
				return nil
			}
			scanned++
			if v == nil {
				continue
			}
			if r, err := decodeRecord(v); err == nil && !r.live(now) {
				doomed = append(doomed, bytes.Clone(k))
			}
		}
		return nil
	})
	return doomed, next, err
}

// deleteExpired deletes those of keys whose records are still expired at
// now (a writer may have renewed one since findExpired saw it).
func (s *Store) deleteExpired(keys [][]byte, now int64) (int, error) {
	n := 0
	err := update(s.db, func(tx *bbolt.Tx) error {
		n = 0
		b := tx.Bucket(s.bucket)
		if b == nil {
			return nil
		}
		for _, k := range keys {
			if _, st, err := lookup(b, k, now); err != nil || st != stateExpired {
				continue
			}
			if err := b.Delete(k); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
