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

// A write whose commit fails (here: the file's descriptor turns read-only,
// so bbolt cannot write its pages) is reported with storage.ErrUnavailable,
// never as swapped.
func TestFailedCommitIsReported(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "fail.db")
	s := mustOpen(t, path, WithNoSync())
	if _, _, err := s.CompareAndSwap(ctx, "before", 0, []byte("v"), time.Hour); err != nil {
		t.Fatal(err)
	}
	fd := dbFD(t, path)
	saved, err := syscall.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(saved)
	ro, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Dup3(ro, fd, syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	syscall.Close(ro)
	rec, swapped, casErr := s.CompareAndSwap(ctx, "k", 0, []byte("v"), time.Hour)
	if err := syscall.Dup3(saved, fd, syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(casErr, storage.ErrUnavailable) || swapped {
		t.Errorf("CompareAndSwap whose commit failed = %+v, %t, %v; want an error wrapping storage.ErrUnavailable", rec, swapped, casErr)
	}
}
