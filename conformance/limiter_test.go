package conformance

import (
	"strings"
	"testing"

	"github.com/sluice-go/sluice/storage"
)

func TestRunLimiterReference(t *testing.T) {
	RunLimiter(t, refFactory(faults{}))
}

// TestLimiterChecksCatchBrokenStores requires each limiter check aimed at a
// broken store to fail on it, so that RunLimiter is known to be able to
// fail.
func TestLimiterChecksCatchBrokenStores(t *testing.T) {
	checks := make(map[string]limiterCheck)
	for _, c := range limiterChecks {
		checks[c.name] = c
	}
	for _, b := range []struct {
		name   string
		faults faults
		fails  []string
	}{
		{"CompareAndSwap ignores expected", faults{ignoreExpected: true}, []string{"TwoHandlesShareExactly"}},
		{"CompareAndSwap is not atomic", faults{notAtomic: true}, []string{"TwoHandlesShareExactly"}},
		{"handles do not share a backend", faults{separateHandles: true}, []string{"TwoHandlesShareExactly"}},
		{"Delete does nothing", faults{deleteNoop: true}, []string{"Reset"}},
		{"keys are case-folded", faults{mapKey: strings.ToLower}, []string{"KeysAndNamesAreSeparate"}},
	} {
		for _, name := range b.fails {
			c, ok := checks[name]
			if !ok {
				t.Fatalf("no limiter check %s", name)
			}
			t.Run(b.name+"/"+name, func(t *testing.T) {
				if err := c.check(t, refFactory(b.faults)); err == nil {
					t.Errorf("a store whose %s passes %s", b.name, name)
				} else {
					t.Logf("fails as it should: %v", err)
				}
			})
		}
	}
}

// TestFactoryOfT: a factory that takes *testing.T is accepted as it is.
func TestFactoryOfT(t *testing.T) {
	ref := refFactory(faults{})
	RunLimiter(t, func(t *testing.T) storage.Store { return ref(t) })
}
