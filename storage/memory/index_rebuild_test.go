package memory

import (
	"fmt"
	"testing"
)

// A rebuild counts the slots it fills afresh: after the table has shrunk,
// inserts that fit in it keep it, instead of rebuilding the whole table
// on every insert (as they would if the tombstones and entries of the
// larger table were still counted).
func TestIndexRebuildResetsUsed(t *testing.T) {
	x := newIndex()
	tab := &table{idx: x}
	const n = 10_000
	entries := make([]*entry, n)
	for i := range entries {
		k := fmt.Sprintf("key:%d", i)
		entries[i] = x.insert(x.hash(k), k, tab)
	}
	for _, e := range entries[1:] {
		x.remove(e)
	}
	if x.used > slotCount(x) {
		t.Fatalf("after shrinking to %d slots, %d counted as used", slotCount(x), x.used)
	}
	before := x.tab.Load()
	for i := range 3 {
		k := fmt.Sprintf("new:%d", i)
		x.insert(x.hash(k), k, tab)
		if x.tab.Load() != before {
			t.Fatalf("insert %d of 3 into a table of %d slots holding %d entries rebuilt it", i+1, slotCount(x), x.len())
		}
	}
}
