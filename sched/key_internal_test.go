package sched

import (
	"errors"
	"testing"
)

// FuzzCanonical checks canonical's allocation-free fast path against
// ParseKey + KeyOf.
func FuzzCanonical(f *testing.F) {
	for _, s := range []string{"", "a@1", "a@1.0", "a@0.1", "a@1e-07", "a@1e-7", "a@-0", "a@+1", "a@0x1p-2",
		"a@1,b@2.50", "a@1,b@2.5", "a@", "a@1,", "a,b@1", "a@NaN", "a@+Inf", "a@-Inf", "a@1e39", "a\x00@1", "a@1_0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := canonical(Key(s))
		e, perr := ParseKey(Key(s))
		if perr != nil {
			if !errors.Is(err, ErrBadKey) {
				t.Fatalf("canonical(%q) = %q, %v; ParseKey: %v", s, got, err, perr)
			}
			return
		}
		if want := KeyOf(e); err != nil || got != want {
			t.Fatalf("canonical(%q) = %q, %v, want %q", s, got, err, want)
		}
	})
}

func TestCanonicalAllocs(t *testing.T) {
	k := Key("style@0.5,formal@1e-07")
	if n := testing.AllocsPerRun(100, func() { canonical(k) }); n != 0 {
		t.Errorf("canonical of a canonical key: %v allocations", n)
	}
}
