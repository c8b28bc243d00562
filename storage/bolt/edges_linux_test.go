//go:build linux

package bolt

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-go/sluice/storage"
)

// dbFD finds the descriptor of the open database file at path.
func dbFD(t *testing.T, path string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	for _, e := range entries {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && target == path {
			fd, err := strconv.Atoi(e.Name())
			if err != nil {
				t.Fatal(err)
			}
			return fd
		}
	}
	t.Fatalf("no open descriptor for %s", path)
	return -1
}

// failCommits makes every commit of the database at path fail until the
// returned function is called: the file's descriptor turns read-only, so
// bbolt cannot write its pages.
func failCommits(t *testing.T, path string) (restore func()) {
	t.Helper()
	fd := dbFD(t, path)
	saved, err := syscall.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	ro, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Dup3(ro, fd, syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	syscall.Close(ro)
	return func() {
		if err := syscall.Dup3(saved, fd, syscall.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		syscall.Close(saved)
	}
}

// A write whose commit fails is reported with storage.ErrUnavailable,
// never as swapped.
func TestFailedCommitIsReported(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "fail.db")
	s := mustOpen(t, path, WithNoSync())
	if _, _, err := s.CompareAndSwap(ctx, "before", 0, []byte("v"), time.Hour); err != nil {
		t.Fatal(err)
	}
	restore := failCommits(t, path)
	rec, swapped, casErr := s.CompareAndSwap(ctx, "k", 0, []byte("v"), time.Hour)
	restore()
	if !errors.Is(casErr, storage.ErrUnavailable) || swapped {
		t.Errorf("CompareAndSwap whose commit failed = %+v, %t, %v; want an error wrapping storage.ErrUnavailable", rec, swapped, casErr)
	}
}

// When a shared transaction fails to commit, a write of it that lost to
// an earlier write of the same transaction is not told of that write's
// record: it was rolled back, and its version goes to the next write.
func TestFailedCommitReportsNoRolledBackRecord(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "rollback.db")
	s := mustOpen(t, path, WithNoSync())
	rec0, _, err := s.CompareAndSwap(ctx, "k", 0, []byte("v0"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// Hold bbolt's writer lock: the next write waits for it in a
	// transaction of its own, and the two after it queue for the next one.
	tx, err := s.db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	queued := func(n int) {
		t.Helper()
		for i := 0; ; i++ {
			s.queueMu.Lock()
			ok := s.busy && len(s.queue) == n
			s.queueMu.Unlock()
			if ok {
				return
			}
			if i == 10000 {
				tx.Rollback()
				t.Fatalf("%d writes not queued after 10s", n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	type outcome struct {
		rec     storage.Record
		swapped bool
		err     error
	}
	cas := func(key, value string, expected uint64) chan outcome {
		done := make(chan outcome, 1)
		go func() {
			rec, swapped, err := s.CompareAndSwap(ctx, key, expected, []byte(value), time.Hour)
			done <- outcome{rec, swapped, err}
		}()
		return done
	}
	first := cas("other", "v", 0)
	queued(0)
	won := cas("k", "won", rec0.Version)
	queued(1)
	lost := cas("k", "lost", rec0.Version)
	queued(2)
	restore := failCommits(t, path)
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	<-first
	w, l := <-won, <-lost
	restore()
	if !errors.Is(w.err, storage.ErrUnavailable) || w.swapped {
		t.Errorf("the first write on k = %+v, %t, %v; want an error wrapping storage.ErrUnavailable", w.rec, w.swapped, w.err)
	}
	if l.err == nil && l.rec.Version != rec0.Version {
		t.Errorf("the second write on k = %+v, %t, nil: a record that was never committed (committed: version %d)", l.rec, l.swapped, rec0.Version)
	}
}
