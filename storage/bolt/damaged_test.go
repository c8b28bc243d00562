package bolt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-go/sluice/storage"
)

// buildDamageable writes 3000 records to a new file at path, half of them
// expiring at once, and returns the file's bytes and the ids of the leaf
// pages that hold records.
func buildDamageable(t *testing.T, path string) ([]byte, []int) {
	t.Helper()
	s, err := Open(path, WithNoSync())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3000 {
		ttl := time.Hour
		if i%2 == 0 {
			ttl = 50 * time.Millisecond
		}
		if _, _, err := s.CompareAndSwap(context.Background(), fmt.Sprintf("k-%05d", i), 0, make([]byte, 40), ttl); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the short records expire
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ps := os.Getpagesize()
	var leaves []int
	for id := 2; (id+1)*ps <= len(data); id++ {
		p := data[id*ps : (id+1)*ps]
		if binary.LittleEndian.Uint16(p[8:]) == 0x02 && strings.Contains(string(p), "k-0") {
			leaves = append(leaves, id)
		}
	}
	if len(leaves) < 3 {
		t.Fatalf("%d leaf pages of records, want several", len(leaves))
	}
	return data, leaves
}

// damage returns a copy of data with page id's flags made invalid, which
// bbolt meets with a panic.
func damage(data []byte, id int) []byte {
	d := append([]byte(nil), data...)
	binary.LittleEndian.PutUint16(d[id*os.Getpagesize()+8:], 0x40)
	return d
}

// A damaged page of records is a storage.ErrCorrupt for the calls that
// meet it, never a panic, in the caller's goroutine, in a write's own or
// in the janitor's, and the store goes on serving the sound pages and
// writes after it.
func TestDamagedPageIsCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.db")
	data, leaves := buildDamageable(t, path)
	if err := os.WriteFile(path, damage(data, leaves[len(leaves)/2]), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path, WithSweepInterval(20*time.Millisecond))
	if err != nil {
		t.Fatalf("Open with a damaged page of records: %v", err)
	}
	defer s.Close()
	cancellable, cancel := context.WithCancel(context.Background())
	defer cancel()
	var damaged, sound []string
	for i := range 3000 {
		key := fmt.Sprintf("k-%05d", i)
		_, err := s.Get(context.Background(), key)
		switch {
		case err == nil:
			sound = append(sound, key)
		case errors.Is(err, storage.ErrCorrupt):
			damaged = append(damaged, key)
		default:
			t.Fatalf("Get(%s) = %v, want nil or an error wrapping storage.ErrCorrupt", key, err)
		}
	}
	if len(damaged) == 0 || len(sound) == 0 {
		t.Fatalf("%d keys read corrupt and %d sound, want some of each", len(damaged), len(sound))
	}
	for _, ctx := range []context.Context{context.Background(), cancellable} {
		if _, _, err := s.CompareAndSwap(ctx, damaged[0], 1, []byte("v"), time.Hour); !errors.Is(err, storage.ErrCorrupt) {
			t.Errorf("CompareAndSwap on a damaged page = %v, want an error wrapping storage.ErrCorrupt", err)
		}
	}
	time.Sleep(100 * time.Millisecond) // the janitor meets the page
	ctx, cancelWrite := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelWrite()
	if _, swapped, err := s.CompareAndSwap(ctx, "fresh", 0, []byte("v"), time.Hour); err != nil || !swapped {
		t.Errorf("a write after those that met the damaged page = %t, %v; want a swap", swapped, err)
	}
}

// Open of a file whose records' first pages are damaged fails with
// storage.ErrCorrupt instead of panicking, and leaves the file unlocked:
// once repaired it opens.
func TestOpenDamagedFileUnlocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.db")
	data, leaves := buildDamageable(t, path)
	for _, id := range leaves {
		if err := os.WriteFile(path, damage(data, id), 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(path, WithOpenTimeout(200*time.Millisecond), WithSweepInterval(time.Hour))
		if err == nil {
			s.Close()
			continue
		}
		if !errors.Is(err, storage.ErrCorrupt) {
			t.Errorf("Open with leaf page %d damaged = %v, want an error wrapping storage.ErrCorrupt", id, err)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err = Open(path, WithOpenTimeout(200*time.Millisecond), WithSweepInterval(time.Hour))
		if err != nil {
			t.Fatalf("Open of the repaired file after a failed Open: %v", err)
		}
		s.Close()
		return
	}
	t.Skip("no damaged page made Open fail on this layout")
}

// A file cut short (an interrupted copy, or a first Open that ran out of
// disk) fails Open with storage.ErrCorrupt; bbolt alone would map it and
// die of a fault reading past its end.
func TestTruncatedFileIsCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.db")
	data, _ := buildDamageable(t, path)
	ps := os.Getpagesize()
	for _, pages := range []int{3, 11, 70, 100, len(data) / ps / 2, len(data)/ps - 1} {
		if err := os.WriteFile(path, data[:pages*ps], 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(path, WithOpenTimeout(200*time.Millisecond), WithSweepInterval(time.Hour))
		if err == nil {
			// The pages it counts are all there (bbolt grows a file
			// ahead of its pages): every record reads.
			for i := range 3000 {
				if _, err := s.Get(context.Background(), fmt.Sprintf("k-%05d", i)); err != nil {
					t.Errorf("Get(k-%05d) from the file cut to %d pages: %v", i, pages, err)
					break
				}
			}
			s.Close()
			t.Logf("cut to %d of %d pages: opens, every record reads", pages, len(data)/ps)
			continue
		}
		t.Logf("cut to %d of %d pages: %v", pages, len(data)/ps, err)
		if !errors.Is(err, storage.ErrCorrupt) {
			t.Errorf("Open of the file cut to %d pages = %v, want an error wrapping storage.ErrCorrupt", pages, err)
		}
	}
	// The same with the first meta page damaged: bbolt reads the second.
	cut := append([]byte(nil), data[:70*ps]...)
	cut[16+20] ^= 0xff
	if err := os.WriteFile(path, cut, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(path, WithOpenTimeout(200*time.Millisecond), WithSweepInterval(time.Hour)); !errors.Is(err, storage.ErrCorrupt) {
		if err == nil {
			s.Close()
		}
		t.Errorf("Open of the file cut to 70 pages, its first meta page damaged = %v, want an error wrapping storage.ErrCorrupt", err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open of the whole file: %v", err)
	}
	s.Close()
}
