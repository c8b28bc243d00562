// Package typednil tells whether a value given as an interface is nil
// inside: an option given a nil *T as a Clock, an Observer or an
// http.Handler holds a non-nil interface that panics on first use, which
// the options refuse up front instead.
package typednil

import "reflect"

// Is reports whether v is nil, or holds a nil pointer, func, map, chan,
// slice or interface.
func Is(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Func, reflect.Map, reflect.Chan, reflect.Slice, reflect.Interface, reflect.UnsafePointer:
		return rv.IsNil()
	}
	return false
}
