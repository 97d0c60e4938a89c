package sched_test

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/sched"
)

func TestKeyOf(t *testing.T) {
	for _, c := range []struct {
		entries []sched.Entry
		want    sched.Key
	}{
		{nil, ""},
		{[]sched.Entry{}, sched.Base},
		{[]sched.Entry{{"style", 1}}, "style@1"},
		{[]sched.Entry{{"a", 0.5}, {"b", -2}}, "a@0.5,b@-2"},
		{[]sched.Entry{{"b", -2}, {"a", 0.5}}, "b@-2,a@0.5"}, // order kept
		{[]sched.Entry{{"x", 0.1}}, "x@0.1"},                 // float32 shortest form, not 0.10000000149011612
		{[]sched.Entry{{"x", 1e-7}}, "x@1e-07"},
		{[]sched.Entry{{"née", 3}}, "née@3"},
	} {
		if got := sched.KeyOf(c.entries); got != c.want {
			t.Errorf("KeyOf(%v) = %q, want %q", c.entries, got, c.want)
		}
		k, err := sched.NewKey(c.entries)
		if err != nil || k != c.want {
			t.Errorf("NewKey(%v) = %q, %v, want %q", c.entries, k, err, c.want)
		}
		back, err := sched.ParseKey(c.want)
		if err != nil {
			t.Errorf("ParseKey(%q): %v", c.want, err)
		} else if len(back) != len(c.entries) || (len(back) > 0 && !slices.Equal(back, c.entries)) {
			t.Errorf("ParseKey(%q) = %v, want %v", c.want, back, c.entries)
		}
	}
}

func TestNewKeyRefuses(t *testing.T) {
	for _, e := range [][]sched.Entry{
		{{"", 1}},
		{{"a,b", 1}},
		{{"a@b", 1}},
		{{"a\nb", 1}},
		{{"a\x7f", 1}},
		{{"\xff", 1}},
		{{"a", float32(math.NaN())}},
		{{"a", float32(math.Inf(1))}},
		{{"ok", 1}, {"a,b", 1}},
	} {
		if k, err := sched.NewKey(e); !errors.Is(err, sched.ErrBadKey) {
			t.Errorf("NewKey(%+v) = %q, %v, want ErrBadKey", e, k, err)
		}
	}
}

func TestParseKey(t *testing.T) {
	for _, c := range []struct {
		key       sched.Key
		canonical sched.Key
	}{
		{"a@1.0", "a@1"},
		{"a@+1", "a@1"},
		{"a@1e0,b@0.50", "a@1,b@0.5"},
		{"a@0x1p-2", "a@0.25"},
		{"a@-0", "a@-0"},
		{"a b@2", "a b@2"},
		{"a@1,a@1", "a@1,a@1"}, // duplicates are the backend's business
	} {
		e, err := sched.ParseKey(c.key)
		if err != nil {
			t.Errorf("ParseKey(%q): %v", c.key, err)
			continue
		}
		if got := sched.KeyOf(e); got != c.canonical {
			t.Errorf("KeyOf(ParseKey(%q)) = %q, want %q", c.key, got, c.canonical)
		}
	}
	for _, k := range []sched.Key{
		"a", "@1", "a@", "a@x", "a@1,", ",a@1", "a@1,,b@1", "a@1@2", "a@nan", "a@inf", "a@-Inf",
		"a@1e39", "a\t@1", "a@1 ", " a@1,b", "a@1;b@2", sched.Key(strings.Repeat("n", 1000)),
	} {
		if e, err := sched.ParseKey(k); !errors.Is(err, sched.ErrBadKey) {
			t.Errorf("ParseKey(%q) = %v, %v, want ErrBadKey", k, e, err)
		} else if len(err.Error()) > 300 {
			t.Errorf("ParseKey(%.20q...): message of %d bytes, want long names elided", k, len(err.Error()))
		}
	}
}

// FuzzParseKey checks that ParseKey never panics and that what it accepts
// has a canonical form that is a fixed point.
func FuzzParseKey(f *testing.F) {
	for _, s := range []string{"", "a@1", "a@0.5,b@-2", "a@1e-7", "x@0x1p-2", "a@", "a,b", "a@1,", "é@1", "a@NaN"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := sched.ParseKey(sched.Key(s))
		if err != nil {
			if !errors.Is(err, sched.ErrBadKey) {
				t.Fatalf("ParseKey(%q): %v does not wrap ErrBadKey", s, err)
			}
			return
		}
		k, err := sched.NewKey(e)
		if err != nil {
			t.Fatalf("NewKey(ParseKey(%q) = %v): %v", s, e, err)
		}
		e2, err := sched.ParseKey(k)
		if err != nil {
			t.Fatalf("ParseKey(%q) (canonical of %q): %v", k, s, err)
		}
		if sched.KeyOf(e2) != k || len(e2) != len(e) {
			t.Fatalf("canonical form of %q is %q, then %q", s, k, sched.KeyOf(e2))
		}
		for i := range e {
			if e[i].Name != e2[i].Name || math.Float32bits(e[i].Alpha) != math.Float32bits(e2[i].Alpha) {
				t.Fatalf("%q: entry %d %v became %v", s, i, e[i], e2[i])
			}
		}
	})
}
