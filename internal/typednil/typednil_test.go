package typednil_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/sluice-go/sluice/internal/typednil"
)

type clock struct{ t time.Time }

func (c *clock) Now() time.Time { return c.t }

type valueClock struct{}

func (valueClock) Now() time.Time { return time.Time{} }

func TestIs(t *testing.T) {
	var nilClock *clock
	var nilFunc http.HandlerFunc
	var nilMap map[string]int
	for _, tc := range []struct {
		name string
		v    any
		want bool
	}{
		{"nil", nil, true},
		{"nil pointer", nilClock, true},
		{"nil func", nilFunc, true},
		{"nil map", nilMap, false},
		{"nil slice", []int(nil), false},
		{"pointer", &clock{}, false},
		{"func", http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), false},
		{"struct value", valueClock{}, false},
		{"int", 0, false},
		{"empty string", "", false},
	} {
		if got := typednil.Is(tc.v); got != tc.want {
			t.Errorf("%s: Is(%#v) = %t, want %t", tc.name, tc.v, got, tc.want)
		}
	}
}
