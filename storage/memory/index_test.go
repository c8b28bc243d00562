package memory

import (
	"fmt"
	"sync"
	"testing"
	"unsafe"
)

// slotCount is the length of x's current table.
func slotCount(x *index) int { return len(*x.tab.Load()) }

func TestIndexGrowsAndShrinks(t *testing.T) {
	x := newIndex()
	tab := &table{idx: x}
	const n = 100_000
	keys := make([]string, n)
	entries := make([]*entry, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("key:%d", i)
		entries[i] = x.insert(x.hash(keys[i]), keys[i], tab)
		if again := x.insert(x.hash(keys[i]), keys[i], tab); again != entries[i] {
			t.Fatalf("second insert of %q made a new entry", keys[i])
		}
	}
	if x.len() != n {
		t.Fatalf("len = %d, want %d", x.len(), n)
	}
	if got := slotCount(x); got < n*4/3 || got > 4*n {
		t.Fatalf("%d slots for %d entries", got, n)
	}
	for i, k := range keys {
		if e := x.lookup(x.hash(k), k); e != entries[i] {
			t.Fatalf("lookup(%q) = %p, want %p", k, e, entries[i])
		}
	}
	if e := x.lookup(x.hash("absent"), "absent"); e != nil {
		t.Fatalf("lookup of an absent key found %q", e.key)
	}
	// Remove all but every hundredth entry: the table shrinks, and what is
	// left is still found, what was removed is not.
	for i := range keys {
		if i%100 != 0 {
			x.remove(entries[i])
		}
	}
	x.remove(entries[1]) // a second removal changes nothing
	if want := n / 100; x.len() != want {
		t.Fatalf("len = %d after removals, want %d", x.len(), want)
	}
	if got := slotCount(x); got > 8*(n/100) {
		t.Fatalf("%d slots left for %d entries: the table did not shrink", got, n/100)
	}
	for i, k := range keys {
		e := x.lookup(x.hash(k), k)
		if i%100 == 0 && e != entries[i] || i%100 != 0 && e != nil {
			t.Fatalf("after removals, lookup(%q) = %p", k, e)
		}
	}
	seen := 0
	x.each(func(*entry) bool { seen++; return true })
	if seen != n/100 {
		t.Fatalf("each visited %d entries, want %d", seen, n/100)
	}
}

// TestIndexTombstonesDoNotFill churns keys through a small index: removed
// slots are reused or cleaned out, so the table stays small and every
// probe ends.
func TestIndexTombstonesDoNotFill(t *testing.T) {
	x := newIndex()
	tab := &table{idx: x}
	for i := range 100_000 {
		k := fmt.Sprintf("k%d", i)
		e := x.insert(x.hash(k), k, tab)
		if i%2 == 0 {
			x.remove(e)
		} else if i >= 10 {
			old := fmt.Sprintf("k%d", i-10)
			if o := x.lookup(x.hash(old), old); o != nil {
				x.remove(o)
			}
		}
	}
	if x.len() > 10 {
		t.Fatalf("len = %d, want at most 10", x.len())
	}
	if got := slotCount(x); got > 64 {
		t.Fatalf("%d slots for %d entries after churn", got, x.len())
	}
}

// TestIndexConcurrent reads while other goroutines insert and remove (run
// with -race): a key that is never removed is always found.
func TestIndexConcurrent(t *testing.T) {
	x := newIndex()
	tab := &table{idx: x}
	const stable = 100
	for i := range stable {
		k := fmt.Sprintf("stable:%d", i)
		x.insert(x.hash(k), k, tab)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprintf("churn:%d:%d", w, i%5000)
				e := x.insert(x.hash(k), k, tab)
				if i%3 == 0 {
					x.remove(e)
				}
			}
		})
	}
	for round := range 200 {
		for i := range stable {
			k := fmt.Sprintf("stable:%d", i)
			if e := x.lookup(x.hash(k), k); e == nil || e.key != k {
				close(stop)
				wg.Wait()
				t.Fatalf("round %d: lookup(%q) missed", round, k)
			}
		}
	}
	close(stop)
	wg.Wait()
}

func TestEntrySize(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the layout is planned for 64-bit platforms")
	}
	if got := unsafe.Sizeof(entry{}); got != entrySize {
		t.Fatalf("an entry takes %d bytes, want %d", got, entrySize)
	}
}
