package bench

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/sluice-go/sluice/storage"
	"github.com/sluice-go/sluice/storage/bolt"
)

// BenchmarkBolt compares sluice on bbolt with the floor: one db.Update
// (one fsynced write transaction) per decision. Both use bbolt's default
// options, so every transaction is synced to disk, and both write the same
// amount: the floor puts the key sluice stores (name@fingerprint:key) and
// a value of the size of sluice's stored record, so that the floor's tree
// is as deep as sluice's and each transaction writes as many pages.
func BenchmarkBolt(b *testing.B) {
	dir := b.TempDir()
	e := newEnv(b)
	runCases(b, e, networkCases, []contender{
		sluiceContender("sluice", func(e *env, ns string) (storage.Store, error) {
			s, err := bolt.Open(filepath.Join(dir, ns+".db"))
			if err != nil {
				return nil, err
			}
			e.cleanup(func() { s.Close() })
			return &countingStore{Store: s}, nil
		}),
		{name: "floor-Update", floor: true, setup: func(e *env, ns string, _ limit) (decideFunc, func() int64, error) {
			db, err := bbolt.Open(filepath.Join(dir, ns+".db"), 0o600, &bbolt.Options{Timeout: time.Second})
			if err != nil {
				return nil, nil, err
			}
			e.cleanup(func() { db.Close() })
			bucket := []byte("floor")
			if err := db.Update(func(tx *bbolt.Tx) error {
				_, err := tx.CreateBucketIfNotExists(bucket)
				return err
			}); err != nil {
				return nil, nil, err
			}
			prefix := ns + "@00000000:" // as long as sluice's name@fingerprint:
			value := make([]byte, boltRecordSize)
			var calls atomic.Int64
			return func(_ context.Context, key string) (bool, error) {
				calls.Add(1)
				return true, db.Update(func(tx *bbolt.Tx) error {
					return tx.Bucket(bucket).Put([]byte(prefix+key), value)
				})
			}, calls.Load, nil
		}},
	})
}

// boltRecordSize is the size of the value sluice stores in bbolt for one
// bucket: the driver's 17-byte header (format, version, expiry) and the
// limiter's record of about 20 bytes.
const boltRecordSize = 37
