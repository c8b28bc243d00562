package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/sluice-go/sluice/storage"
)

// ErrLocked is returned by Open when another process holds the database
// file and the open timeout (WithOpenTimeout) passed without it letting go.
// The error also wraps bbolt's own timeout error.
var ErrLocked = errors.New("bolt: database file is locked by another process")

const (
	defaultBucket        = "sluice"
	defaultOpenTimeout   = 3 * time.Second
	defaultSweepInterval = time.Minute

	// maxBatch bounds the writes that share one transaction, so that a
	// burst of writers cannot make one transaction arbitrarily large.
	maxBatch = 1024

	fileMode = 0o600
)

// Option configures a Store made by Open or New.
type Option func(*config)

type config struct {
	bucket        string
	openTimeout   time.Duration
	noSync        bool
	sweepInterval time.Duration

	// set by options that apply to Open only, so New can refuse them
	openOnly []string
}

// WithBucket names the top-level bbolt bucket that holds the records. The
// default is "sluice". An empty name is an error, and so is
// "\x00sluice layouts", the bucket where this package notes which buckets
// it created (see the package doc). Several stores may share
// one file with different buckets; stores that share a bucket share their
// records (and the limits kept in them).
func WithBucket(name string) Option {
	return func(c *config) { c.bucket = name }
}

// WithOpenTimeout bounds how long Open waits for the file lock that
// another process holds; after it, Open fails with ErrLocked. The default
// is 3 seconds; d must be positive (bbolt would wait forever on zero, which
// this package never does). It applies to Open only: New returns an error
// when given it, since the caller opened the database.
func WithOpenTimeout(d time.Duration) Option {
	return func(c *config) {
		c.openTimeout = d
		c.openOnly = append(c.openOnly, "WithOpenTimeout")
	}
}

// WithNoSync makes Open skip the fsync at the end of every write
// transaction. Writes get much faster, but the last writes before a power
// loss or an operating-system crash may be lost, so that tokens already
// granted are granted again after a reboot; a crash of the process alone
// loses nothing. The default is to sync every write transaction. It
// applies to Open only: New returns an error when given it; set
// bbolt.Options.NoSync on the database you pass instead.
func WithNoSync() Option {
	return func(c *config) {
		c.noSync = true
		c.openOnly = append(c.openOnly, "WithNoSync")
	}
}

// WithSweepInterval sets how often the janitor removes expired records.
// The default is one minute; d must be positive. Expired records read as
// absent at once whatever the interval: it only decides how soon their
// space is reclaimed.
func WithSweepInterval(d time.Duration) Option {
	return func(c *config) { c.sweepInterval = d }
}

// configure applies opts over the defaults and validates the result.
func configure(opts []Option) (config, error) {
	c := config{
		bucket:        defaultBucket,
		openTimeout:   defaultOpenTimeout,
		sweepInterval: defaultSweepInterval,
	}
	for _, opt := range opts {
		if opt != nil {
			opt(&c)
		}
	}
	switch {
	case c.bucket == "":
		return c, errors.New("empty bucket name")
	case c.bucket == string(layoutsBucket):
		return c, fmt.Errorf("bucket name %q is the one this package keeps the layouts of the others in", c.bucket)
	case c.openTimeout <= 0:
		return c, fmt.Errorf("open timeout %v is not positive", c.openTimeout)
	case c.sweepInterval <= 0:
		return c, fmt.Errorf("sweep interval %v is not positive", c.sweepInterval)
	}
	return c, nil
}

// Store is a storage.Store kept in one bbolt file. It is safe for
// concurrent use. Make one with Open or New.
type Store struct {
	db       *bbolt.DB
	bucket   []byte
	owned    bool // Close closes db
	interval time.Duration

	// mu is held for reading by every call in flight and for writing by
	// Close, so that Close waits for them and later calls see closed.
	mu     sync.RWMutex
	closed bool

	queueMu sync.Mutex
	queue   []*writeOp // writes waiting for the next transaction
	busy    bool       // a transaction of writes is running; new ones queue

	stop chan struct{} // closed by Close
	// wg counts the janitor, any goroutine draining the queue, and the
	// transactions of lone writers run in goroutines of their own.
	wg sync.WaitGroup
}

var _ storage.Store = (*Store)(nil)

// Open opens the bbolt database file at path, creating it (mode 0600) if
// it does not exist, and returns a Store over it. Close closes the file.
//
// bbolt locks the file for one process at a time: while another process
// holds it, Open waits up to the open timeout (WithOpenTimeout, default 3
// seconds) and then fails with an error wrapping ErrLocked. A file that is
// not a bbolt database fails with an error wrapping storage.ErrCorrupt and
// bbolt's cause; so does a bucket that holds data not written by this
// package.
func Open(path string, opts ...Option) (*Store, error) {
	cfg, err := configure(opts)
	if err != nil {
		return nil, fmt.Errorf("bolt: open %q: %w", path, err)
	}
	bopts := *bbolt.DefaultOptions
	bopts.Timeout = cfg.openTimeout
	bopts.NoSync = cfg.noSync
	db, err := safeOpen(path, &bopts)
	if err != nil {
		return nil, openError(path, cfg.openTimeout, err)
	}
	s, err := start(db, cfg, true)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("bolt: open %q: %w", path, err)
	}
	return s, nil
}

// errBboltPanic reports a panic of bbolt.Open, which bbolt raises instead
// of an error for some damaged files (a freelist or meta page that points
// at garbage).
var errBboltPanic = errors.New("bbolt panicked reading the file")

// view is db.View and update is db.Update, with a panic of bbolt's on a
// damaged page turned into an error wrapping errBboltPanic, which callers
// report as storage.ErrCorrupt. bbolt rolls the transaction back as the panic leaves it,
// releasing its locks, so the store goes on serving the sound pages.
func view(db *bbolt.DB, fn func(*bbolt.Tx) error) error {
	return guard(func() error { return db.View(fn) })
}

func update(db *bbolt.DB, fn func(*bbolt.Tx) error) error {
	return guard(func() error { return db.Update(fn) })
}

// guard runs tx, turning a panic into an error (see view).
func guard(tx func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", errBboltPanic, r)
		}
	}()
	return tx()
}

// errTruncated reports a file shorter than the pages its header counts.
var errTruncated = errors.New("file shorter than the pages its header counts (truncated?)")

// checkSize returns errTruncated for a file shorter than the pages its
// newest valid meta page counts: a copy cut short, or a first Open that
// ran out of disk. bbolt maps such a file and dies of a fault reading past
// its end, which no recover catches. Files it cannot judge (absent, empty,
// no valid meta page) are left to bbolt.
func checkSize(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return nil
	}
	// A meta page: the 16-byte page header, then magic, version, page
	// size and flags (uint32 each), the root bucket (16 bytes), the
	// freelist's page, the high-water page id, the transaction id, and an
	// FNV-64a checksum of what precedes it, in the machine's byte order.
	const metaAt, metaLen = 16, 64
	meta := func(off int64) (pages, txid uint64, pageSize int64, ok bool) {
		var b [metaAt + metaLen]byte
		if _, err := f.ReadAt(b[:], off); err != nil {
			return 0, 0, 0, false
		}
		m := b[metaAt:]
		h := fnv.New64a()
		h.Write(m[:56])
		if binary.NativeEndian.Uint32(m) != 0xED0CDAED || binary.NativeEndian.Uint64(m[56:]) != h.Sum64() {
			return 0, 0, 0, false
		}
		return binary.NativeEndian.Uint64(m[40:]), binary.NativeEndian.Uint64(m[48:]), int64(binary.NativeEndian.Uint32(m[8:])), true
	}
	// The second meta page starts a page in: at the first's page size, or
	// at the system's, bbolt's default, when the first is damaged.
	pages, txid, pageSize, ok := meta(0)
	second := pageSize
	if !ok {
		second = int64(os.Getpagesize())
	}
	if p, t, ps, ok1 := meta(second); ok1 && (!ok || t > txid) {
		pages, pageSize, ok = p, ps, true
	}
	if !ok {
		return nil
	}
	if need := int64(pages) * pageSize; pages < 1<<40 && fi.Size() < need {
		return fmt.Errorf("%w: %d bytes for %d pages of %d", errTruncated, fi.Size(), pages, pageSize)
	}
	return nil
}

// safeOpen is bbolt.Open, with a panic turned into an error.
func safeOpen(path string, opts *bbolt.Options) (db *bbolt.DB, err error) {
	if err := checkSize(path); err != nil {
		// Another process may be writing a new file's first pages,
		// before the lock bbolt takes after this: look again once.
		time.Sleep(50 * time.Millisecond)
		if err := checkSize(path); err != nil {
			return nil, err
		}
	}
	// bbolt has opened and locked the file when it panics, and returns no
	// handle to close: keep the file, and close it (releasing the lock).
	var file *os.File
	o := *opts
	openFile := o.OpenFile
	if openFile == nil {
		openFile = os.OpenFile
	}
	o.OpenFile = func(name string, flag int, perm os.FileMode) (*os.File, error) {
		f, err := openFile(name, flag, perm)
		file = f
		return f, err
	}
	defer func() {
		if r := recover(); r != nil {
			if file != nil {
				unlockFile(file) // its mapping may outlive the close
				_ = file.Close()
			}
			db, err = nil, fmt.Errorf("%w: %v", errBboltPanic, r)
		}
	}()
	return bbolt.Open(path, fileMode, &o)
}

// openError explains why bbolt.Open failed.
func openError(path string, timeout time.Duration, err error) error {
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return fmt.Errorf("bolt: open %q: %w (open timeout %v): %w", path, ErrLocked, timeout, err)
	case errors.Is(err, bolterrors.ErrInvalid),
		errors.Is(err, bolterrors.ErrVersionMismatch),
		errors.Is(err, bolterrors.ErrChecksum),
		errors.Is(err, errBboltPanic),
		errors.Is(err, errTruncated),
		// A file shorter than two pages that is not empty: bbolt says so
		// without a sentinel error.
		strings.Contains(err.Error(), "file size too small"):
		return fmt.Errorf("bolt: open %q: not a bbolt database: %w: %w", path, storage.ErrCorrupt, err)
	default:
		return fmt.Errorf("bolt: open %q: %w", path, err)
	}
}

// New returns a Store over db, which the caller opened and keeps: Close
// stops the store's goroutines but never closes db. The database must be
// writable. WithOpenTimeout and WithNoSync are refused with an error: they
// describe how to open a file, which the caller has done (set them in the
// bbolt.Options given to bbolt.Open). New leaves every field of db as it
// is, MaxBatchDelay and NoSync included.
//
// Several stores may share one db; stores over the same bucket see each
// other's writes, atomically. Besides the records' bucket, New creates the
// top-level bucket "\x00sluice layouts", where the package notes the
// buckets it made (see the package doc).
func New(db *bbolt.DB, opts ...Option) (*Store, error) {
	if db == nil {
		return nil, errors.New("bolt: new: nil *bbolt.DB")
	}
	cfg, err := configure(opts)
	if err != nil {
		return nil, fmt.Errorf("bolt: new: %w", err)
	}
	if len(cfg.openOnly) > 0 {
		return nil, fmt.Errorf("bolt: new: %v apply to Open only; set them in the bbolt.Options that opened db", cfg.openOnly)
	}
	if db.IsReadOnly() {
		return nil, fmt.Errorf("bolt: new: %w", bolterrors.ErrDatabaseReadOnly)
	}
	s, err := start(db, cfg, false)
	if err != nil {
		return nil, fmt.Errorf("bolt: new: %w", err)
	}
	return s, nil
}

// start prepares the bucket and starts the janitor.
func start(db *bbolt.DB, cfg config, owned bool) (*Store, error) {
	name := []byte(cfg.bucket)
	err := update(db, func(tx *bbolt.Tx) error {
		layouts, err := tx.CreateBucketIfNotExists(layoutsBucket)
		if err != nil {
			return fmt.Errorf("bucket %q: %w", layoutsBucket, err)
		}
		b, err := tx.CreateBucketIfNotExists(name)
		if err != nil {
			return fmt.Errorf("bucket %q: %w", cfg.bucket, err)
		}
		if layouts.Bucket(name) != nil {
			return fmt.Errorf("bucket %q holds a nested bucket under %q: %w", layoutsBucket, cfg.bucket, storage.ErrCorrupt)
		}
		mark := layouts.Get(name)
		// A marker in the bucket is that of an earlier release: of a file
		// not migrated yet, or written again by such a release that opened
		// the file while its bucket was empty. It goes in either case.
		old, err := takeOldMarker(b)
		if err != nil {
			return fmt.Errorf("bucket %q: %w", cfg.bucket, err)
		}
		for _, m := range [][]byte{mark, old} {
			if m != nil && !bytes.Equal(m, markerValue) {
				return fmt.Errorf("bucket %q has an unknown layout %q: %w", cfg.bucket, m, storage.ErrCorrupt)
			}
		}
		if mark == nil {
			if k, _ := b.Cursor().First(); k != nil && old == nil {
				return fmt.Errorf("bucket %q holds data not written by sluice: %w", cfg.bucket, storage.ErrCorrupt)
			}
			if err := layouts.Put(name, markerValue); err != nil {
				return fmt.Errorf("bucket %q: %w", layoutsBucket, err)
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, errBboltPanic):
		return nil, fmt.Errorf("%w: %w", storage.ErrCorrupt, err)
	case err != nil:
		return nil, err
	}
	s := &Store{
		db:       db,
		bucket:   name,
		owned:    owned,
		interval: cfg.sweepInterval,
		stop:     make(chan struct{}),
	}
	s.wg.Add(1)
	go s.janitor()
	return s, nil
}

// takeOldMarker removes the markers that earlier releases kept in the
// records' bucket b and returns a copy of the one found, or nil if b has
// none. The marker under legacyMarkerKey, a key callers may use, is taken
// only when it holds markerValue, which a record never does (a record
// starts with its format byte). A nested bucket under markerKey, which no
// caller can write, is an unknown layout.
func takeOldMarker(b *bbolt.Bucket) ([]byte, error) {
	if b.Bucket(markerKey) != nil {
		return nil, fmt.Errorf("a nested bucket where earlier releases kept the layout marker: %w", storage.ErrCorrupt)
	}
	var mark []byte
	if v := b.Get(markerKey); v != nil {
		mark = bytes.Clone(v)
		if err := b.Delete(markerKey); err != nil {
			return nil, fmt.Errorf("marker of an earlier release: %w", err)
		}
	}
	if bytes.Equal(b.Get(legacyMarkerKey), markerValue) {
		if err := b.Delete(legacyMarkerKey); err != nil {
			return nil, fmt.Errorf("marker of an earlier release: %w", err)
		}
		if mark == nil {
			mark = bytes.Clone(markerValue)
		}
	}
	return mark, nil
}

// Get returns the record under key, reading it in a read-only transaction.
// An absent or expired record returns Version 0 and a nil Value. A stored
// value not in this package's layout returns an error wrapping
// storage.ErrCorrupt.
func (s *Store) Get(ctx context.Context, key string) (storage.Record, error) {
	if err := ctx.Err(); err != nil {
		return storage.Record{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return storage.Record{}, closedError("get", key)
	}
	var (
		rec  storage.Record
		rerr error
	)
	now := time.Now().UnixNano()
	err := view(s.db, func(tx *bbolt.Tx) error {
		b := tx.Bucket(s.bucket)
		if b == nil {
			return bolterrors.ErrBucketNotFound
		}
		r, st, err := lookup(b, []byte(key), now)
		switch {
		case err != nil:
			rerr = corruptError("get", key, err)
		case st == stateLive:
			rec = r.export()
		}
		return nil
	})
	switch {
	case errors.Is(err, errBboltPanic):
		return storage.Record{}, corruptError("get", key, err)
	case err != nil:
		return storage.Record{}, unavailableError("get", key, err)
	}
	return rec, rerr
}

// CompareAndSwap writes value under key iff the stored version equals
// expected (0: absent or expired), with a new version taken from the
// bucket's persistent sequence. Concurrent calls share one write
// transaction, and so one fsync; a call that finds no transaction running
// starts one at once. It returns once the transaction is durable (unless
// WithNoSync).
//
// A ctx that is done before the call writes nothing. A ctx that ends while
// the write is queued, or while its transaction waits for bbolt's writer
// lock, returns ctx.Err() at once and writes nothing. Once the write is
// applied in a transaction, the call waits for the commit (one
// transaction, bounded by the disk) and reports the true outcome.
func (s *Store) CompareAndSwap(ctx context.Context, key string, expected uint64, value []byte, ttl time.Duration) (storage.Record, bool, error) {
	op := &writeOp{ctx: ctx, name: "cas", key: key, expected: expected, value: value, ttl: ttl}
	if err := s.write(ctx, op); err != nil {
		return storage.Record{}, false, err
	}
	return op.rec, op.swapped, nil
}

// Delete removes key in a write transaction shared with concurrent writes,
// as CompareAndSwap does, and with the same context rules. Deleting an
// absent key is not an error; a value not in this package's layout is not
// removed and returns an error wrapping storage.ErrCorrupt.
func (s *Store) Delete(ctx context.Context, key string) error {
	return s.write(ctx, &writeOp{ctx: ctx, name: "delete", key: key, del: true})
}

// Close waits for the calls in flight, stops the janitor and closes the
// database file if Open opened it. Later calls return errors wrapping
// storage.ErrClosed. Close is idempotent. A write waiting for bbolt's
// writer lock, held by another user of a database given to New (an open
// db.Begin(true), say), makes Close wait until that lock is released.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	s.wg.Wait()
	if s.owned {
		if err := s.db.Close(); err != nil {
			return fmt.Errorf("bolt: close %q: %w", s.db.Path(), err)
		}
	}
	return nil
}

// Write-combining (group commit). A write that finds no transaction of
// writes running starts one at once, like db.Update: in the caller's
// goroutine, or, when the caller's ctx can end, in a goroutine of its own
// that the caller can leave.
// Writes that arrive while it runs queue; when it ends, one goroutine
// (drain) commits everything queued in one transaction, and again until
// the queue is empty, so concurrent writers share one fsync. Unlike bbolt's
// Batch there is no delay waiting for company, and no closure ever runs
// twice: each op is claimed exactly once, inside the transaction, and a
// failed commit fails every op it claimed: what one op wrote may or may
// not be on disk, and what another read may be a write of the same
// transaction, rolled back.

const (
	opQueued    int32 = iota // waiting for a transaction
	opTaken                  // claimed by a transaction: the caller waits for done
	opAbandoned              // the caller's ctx ended first: never applied
)

// writeOp is one CompareAndSwap or Delete and, once done is closed, its
// outcome.
type writeOp struct {
	ctx      context.Context
	name     string // operation, for errors
	key      string
	del      bool
	expected uint64
	value    []byte
	ttl      time.Duration

	state atomic.Int32
	done  chan struct{} // nil for a lone writer whose ctx cannot end

	// Written by the transaction before done is closed.
	rec     storage.Record
	swapped bool
	err     error
}

// write commits op at once if no transaction of writes is running, or
// queues it for the next one and waits for its outcome or for ctx.
func (s *Store) write(ctx context.Context, op *writeOp) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return closedError(op.name, op.key)
	}
	s.queueMu.Lock()
	lone := !s.busy
	s.busy = true
	if lone && ctx.Done() == nil {
		// A lone writer whose ctx cannot end commits in the caller's
		// goroutine and needs no done channel: nobody else ever holds op.
		s.queueMu.Unlock()
		defer s.handOff() // also if commit panics, so that writes go on
		s.commit([]*writeOp{op})
		return op.err
	}
	op.done = make(chan struct{})
	if !lone {
		s.queue = append(s.queue, op)
	}
	s.queueMu.Unlock()
	if lone {
		// Its transaction may wait for bbolt's writer lock, held by
		// another user of the same *bbolt.DB or by a long fsync: it runs
		// in a goroutine of its own, which Close waits for, so that the
		// caller can leave as a queued one does.
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.commit([]*writeOp{op})
			s.handOff()
		}()
	}
	select {
	case <-op.done:
	case <-ctx.Done():
		if op.state.CompareAndSwap(opQueued, opAbandoned) {
			return ctx.Err()
		}
		<-op.done // taken: the outcome is decided by the commit, wait for it
	}
	return op.err
}

// handOff ends a lone writer's transaction: the writes queued meanwhile go
// to a goroutine that drains the queue, or the store becomes idle. It runs
// while the caller holds s.mu for reading, or in a goroutine counted in
// s.wg, so Close, which waits for both, also waits for the drain.
func (s *Store) handOff() {
	s.queueMu.Lock()
	defer s.queueMu.Unlock()
	if len(s.queue) == 0 {
		s.busy = false
		return
	}
	s.wg.Add(1)
	go s.drain()
}

// drain commits the queued writes, a transaction at a time, until none
// are left.
func (s *Store) drain() {
	defer s.wg.Done()
	for {
		batch := s.take()
		if len(batch) == 0 {
			return
		}
		s.commit(batch)
	}
}

// take removes up to maxBatch ops from the head of the queue; when the
// queue is empty it marks the store idle instead.
func (s *Store) take() []*writeOp {
	s.queueMu.Lock()
	defer s.queueMu.Unlock()
	if len(s.queue) == 0 {
		s.busy = false
		return nil
	}
	if len(s.queue) <= maxBatch {
		batch := s.queue
		s.queue = nil
		return batch
	}
	batch := s.queue[:maxBatch:maxBatch]
	s.queue = append([]*writeOp(nil), s.queue[maxBatch:]...)
	return batch
}

// commit applies batch in one write transaction and reports to every op
// it claimed.
func (s *Store) commit(batch []*writeOp) {
	if !slices.ContainsFunc(batch, func(op *writeOp) bool { return op.state.Load() == opQueued }) {
		return // every caller has left: no empty transaction
	}
	err := update(s.db, func(tx *bbolt.Tx) error {
		now := time.Now()
		b := tx.Bucket(s.bucket)
		for _, op := range batch {
			// Claim the op now that the writer lock is held: a caller whose
			// ctx ended while we waited for it has already left.
			if !op.state.CompareAndSwap(opQueued, opTaken) {
				continue
			}
			if err := op.ctx.Err(); err != nil {
				op.err = err
				continue
			}
			if b == nil {
				op.err = unavailableError(op.name, op.key, bolterrors.ErrBucketNotFound)
				continue
			}
			s.apply(b, op, now)
		}
		return nil
	})
	for _, op := range batch {
		switch {
		case op.state.CompareAndSwap(opQueued, opTaken):
			// The transaction never began, so never saw this op.
			op.err = unavailableError(op.name, op.key, err)
		case op.state.Load() != opTaken:
			continue // abandoned: nobody waits
		case err != nil && op.err == nil:
			// The commit failed: a write may or may not be on disk, and a
			// record read (a conflict's) may be one that an earlier op of
			// this transaction wrote, rolled back with it, whose version
			// the next write gets again.
			op.rec, op.swapped = storage.Record{}, false
			if errors.Is(err, errBboltPanic) {
				op.err = corruptError(op.name, op.key, err)
			} else {
				op.err = unavailableError(op.name, op.key, err)
			}
		}
		if op.done != nil {
			close(op.done)
		}
	}
}

// apply performs one op inside the write transaction; everything it
// returns is copied out of tx.
func (s *Store) apply(b *bbolt.Bucket, op *writeOp, now time.Time) {
	key := []byte(op.key)
	cur, st, err := lookup(b, key, now.UnixNano())
	if err != nil {
		op.err = corruptError(op.name, op.key, err)
		return
	}
	if op.del {
		if st == stateAbsent {
			return
		}
		if err := b.Delete(key); err != nil {
			op.err = unavailableError(op.name, op.key, err)
		}
		return
	}
	var version uint64
	if st == stateLive {
		version = cur.version
	}
	if version != op.expected {
		if st == stateLive {
			op.rec = cur.export()
		}
		return
	}
	next, err := b.NextSequence()
	if err != nil {
		op.err = unavailableError(op.name, op.key, err)
		return
	}
	enc := encodeRecord(next, expiryAt(now, op.ttl), op.value)
	if err := b.Put(key, enc); err != nil {
		op.err = unavailableError(op.name, op.key, err)
		return
	}
	op.swapped = true
	// enc is ours, not the transaction's: bbolt copies it into its pages
	// and never writes to it, so its value part is the copy to return.
	op.rec = storage.Record{Value: enc[headerLen:len(enc):len(enc)], Version: next}
}

// Record states as lookup finds them.
const (
	stateAbsent  = iota // no value under the key
	stateExpired        // our record, past its expiry: reads as absent
	stateLive
)

// lookup reads key from b. The record aliases the transaction's memory.
func lookup(b *bbolt.Bucket, key []byte, now int64) (record, int, error) {
	k, v := b.Cursor().Seek(key)
	if !bytes.Equal(k, key) {
		return record{}, stateAbsent, nil
	}
	if v == nil {
		return record{}, stateAbsent, errBucket
	}
	r, err := decodeRecord(v)
	if err != nil {
		return record{}, stateAbsent, err
	}
	if !r.live(now) {
		return r, stateExpired, nil
	}
	return r, stateLive, nil
}

func closedError(op, key string) error {
	return fmt.Errorf("bolt: %s %q: %w", op, key, storage.ErrClosed)
}

func corruptError(op, key string, cause error) error {
	return fmt.Errorf("bolt: %s %q: %w: %w", op, key, storage.ErrCorrupt, cause)
}

func unavailableError(op, key string, cause error) error {
	return fmt.Errorf("bolt: %s %q: %w: %w", op, key, storage.ErrUnavailable, cause)
}
