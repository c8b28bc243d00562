// Package typednil tells whether a value given as an interface is nil
// inside: an option given a nil *T as a Clock, an Observer or an
// http.Handler holds a non-nil interface that panics on first use, which
// the options refuse up front instead.
package typednil

import "reflect"

// Is reports whether v is nil, or holds a nil pointer or a nil func: the
// values whose methods cannot work. A nil map, slice or chan is a usable
// receiver (a nil slice of observers ranges over nothing), so it is not
// refused.
func Is(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Func:
		return rv.IsNil()
	}
	return false
}
