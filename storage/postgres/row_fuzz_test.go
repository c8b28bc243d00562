package postgres

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/sluice-go/sluice/storage"
)

// fakeRow is a pgx.Row that scans fixed values, as the server could send
// them for a damaged or foreign table.
type fakeRow []any

func (r fakeRow) Scan(dest ...any) error {
	if len(dest) != len(r) {
		return errors.New("column count")
	}
	for i, d := range dest {
		switch d := d.(type) {
		case *bool:
			*d = r[i].(bool)
		case *int64:
			*d = *r[i].(*int64)
		case **int64:
			*d = r[i].(*int64)
		case *[]byte:
			*d = r[i].([]byte)
		case *time.Time:
			*d = r[i].(time.Time)
		default:
			return errors.New("unexpected destination")
		}
	}
	return nil
}

// FuzzReadRow feeds arbitrary rows to readInsert and readSwap: a version
// that is not positive is ErrCorrupt, never a record; a record's Version
// is the row's; a swap returns the caller's value and a conflict the
// stored one.
func FuzzReadRow(f *testing.F) {
	f.Add(true, int64(7), true, int64(0), false, []byte("stored"), []byte("mine"))
	f.Add(false, int64(7), false, int64(9), true, []byte("stored"), []byte("mine"))
	f.Add(false, int64(0), false, int64(0), false, []byte(nil), []byte("mine"))
	f.Add(true, int64(-1), true, int64(-5), true, []byte{}, []byte{})
	f.Add(false, int64(-9223372036854775808), false, int64(1), true, []byte("x"), []byte("y"))
	now := time.Unix(1_700_000_000, 123000)
	f.Fuzz(func(t *testing.T, swapped bool, version int64, hasWritten bool, current int64, hasCurrent bool, stored, value []byte) {
		check := func(name string, rec storage.Record, ok bool, at time.Time, err error, wantVersion int64, wantSwap bool, wantValue []byte, present bool) {
			t.Helper()
			switch {
			case !present:
				if err != nil || ok || rec.Version != 0 || rec.Value != nil {
					t.Fatalf("%s: absent row read as %+v, %v, %v", name, rec, ok, err)
				}
			case wantVersion <= 0:
				if !errors.Is(err, storage.ErrCorrupt) || ok || rec.Version != 0 || !at.IsZero() {
					t.Fatalf("%s: version %d read as %+v, %v, %v; want ErrCorrupt", name, wantVersion, rec, ok, err)
				}
			default:
				if err != nil || ok != wantSwap || rec.Version != uint64(wantVersion) || !bytes.Equal(rec.Value, wantValue) || !at.Equal(now) {
					t.Fatalf("%s: read as %+v, %v, %v, %v; want version %d, swapped %v, value %q", name, rec, ok, at, err, wantVersion, wantSwap, wantValue)
				}
			}
		}

		v := version
		rec, ok, stale, at, err, scanErr := readInsert(fakeRow{swapped, &v, stored, true, now}, "k", value)
		if scanErr != nil {
			t.Fatal(scanErr)
		}
		want := value
		if !swapped {
			want = stored
		}
		if stale {
			t.Fatalf("readInsert of a live row: stale")
		}
		check("readInsert", rec, ok, at, err, version, swapped, want, true)
		// A row no longer live: a swap is read as before; a conflict is
		// stale, with nothing in it.
		rec, ok, stale, at, err, scanErr = readInsert(fakeRow{swapped, &v, stored, false, now}, "k", value)
		if scanErr != nil {
			t.Fatal(scanErr)
		}
		if swapped {
			if stale {
				t.Fatalf("readInsert of a swap: stale")
			}
			check("readInsert swapped", rec, ok, at, err, version, true, value, true)
		} else if !stale || err != nil || ok || rec.Version != 0 || rec.Value != nil {
			t.Fatalf("readInsert of a conflict with an expired row: %+v, %v, stale %v, %v; want a stale, empty outcome", rec, ok, stale, err)
		}

		var written, cur *int64
		if hasWritten {
			w := version
			written = &w
		}
		if hasCurrent {
			c := current
			cur = &c
		}
		rec, ok, at, err, scanErr = readSwap(fakeRow{written, cur, stored, now}, "k", value)
		if scanErr != nil {
			t.Fatal(scanErr)
		}
		if hasWritten {
			check("readSwap written", rec, ok, at, err, version, true, value, true)
		} else {
			check("readSwap conflict", rec, ok, at, err, current, false, stored, hasCurrent)
		}
	})
}
