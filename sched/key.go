package sched

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Key names an adapter configuration canonically: "" ([Base]) is the base
// model; otherwise "name@alpha,name@alpha,..." with the entries in the order
// given (order matters: fusing adapters is order-dependent) and each alpha
// formatted as strconv.FormatFloat(float64(alpha), 'g', -1, 32). Two
// requests are grouped together exactly when their keys are equal.
type Key string

// Base is the key of the base model (no adapter).
const Base Key = ""

// Entry is one adapter of a configuration and its alpha.
type Entry struct {
	Name  string
	Alpha float32
}

// ErrBadKey reports a key or entry that [ParseKey] or [NewKey] refuses.
var ErrBadKey = errors.New("sched: bad key")

// KeyOf returns the canonical key of entries (Base for none). It does not
// check them: a name with ',' or '@' would make a key that means something
// else or that ParseKey refuses. Use [NewKey] for entries that come from
// outside.
func KeyOf(entries []Entry) Key {
	if len(entries) == 0 {
		return Base
	}
	var b strings.Builder
	for i, e := range entries {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(e.Name)
		b.WriteByte('@')
		b.WriteString(strconv.FormatFloat(float64(e.Alpha), 'g', -1, 32))
	}
	return Key(b.String())
}

// NewKey is KeyOf after checking every entry: names non-empty valid UTF-8
// without ',', '@' or control characters, alphas finite. The error wraps
// ErrBadKey.
func NewKey(entries []Entry) (Key, error) {
	for i, e := range entries {
		if err := checkName(e.Name); err != nil {
			return "", fmt.Errorf("%w: entry %d: %v", ErrBadKey, i, err)
		}
		if a := float64(e.Alpha); math.IsNaN(a) || math.IsInf(a, 0) {
			return "", fmt.Errorf("%w: entry %d (%s): alpha %v is not finite", ErrBadKey, i, quote(e.Name), e.Alpha)
		}
	}
	return KeyOf(entries), nil
}

// ParseKey returns the entries of k (none for Base), the inverse of KeyOf.
// Every entry must be "name@alpha" with a name as NewKey requires and a
// finite alpha that strconv.ParseFloat reads as a float32; alphas need not
// be written canonically (KeyOf(ParseKey(k)) is the canonical form of k).
// The error wraps ErrBadKey.
func ParseKey(k Key) ([]Entry, error) {
	if k == Base {
		return nil, nil
	}
	s := string(k)
	entries := make([]Entry, 0, strings.Count(s, ",")+1)
	for i := 0; ; i++ {
		part, rest, more := strings.Cut(s, ",")
		name, alpha, ok := strings.Cut(part, "@")
		if !ok {
			return nil, fmt.Errorf("%w: entry %d %s: want name@alpha", ErrBadKey, i, quote(part))
		}
		if err := checkName(name); err != nil {
			return nil, fmt.Errorf("%w: entry %d: %v", ErrBadKey, i, err)
		}
		a, err := strconv.ParseFloat(alpha, 32)
		if err != nil || math.IsNaN(a) || math.IsInf(a, 0) {
			return nil, fmt.Errorf("%w: entry %d (%s): alpha %s is not a finite float32", ErrBadKey, i, quote(name), quote(alpha))
		}
		entries = append(entries, Entry{Name: name, Alpha: float32(a)})
		if !more {
			return entries, nil
		}
		s = rest
	}
}

// canonical returns the canonical form of k, or an error wrapping
// ErrBadKey. A key that is canonical already is returned as is, without
// allocating.
func canonical(k Key) (Key, error) {
	if k == Base {
		return Base, nil
	}
	var buf [32]byte
	for s := string(k); ; {
		part, rest, more := strings.Cut(s, ",")
		name, alpha, ok := strings.Cut(part, "@")
		if !ok || checkName(name) != nil {
			break
		}
		a, err := strconv.ParseFloat(alpha, 32)
		if err != nil || math.IsNaN(a) || math.IsInf(a, 0) || string(strconv.AppendFloat(buf[:0], a, 'g', -1, 32)) != alpha {
			break // invalid, or valid but not canonical: ParseKey says which
		}
		if !more {
			return k, nil
		}
		s = rest
	}
	entries, err := ParseKey(k)
	if err != nil {
		return "", err
	}
	return KeyOf(entries), nil
}

func checkName(name string) error {
	if name == "" {
		return errors.New("empty adapter name")
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("adapter name %s is not valid UTF-8", quote(name))
	}
	for _, r := range name {
		if r == ',' || r == '@' || unicode.IsControl(r) {
			return fmt.Errorf("adapter name %s contains %q", quote(name), r)
		}
	}
	return nil
}

// quote quotes s for a message, eliding the middle of a long one.
func quote(s string) string {
	const max = 80
	if len(s) > max {
		cut := max / 2
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		end := len(s) - max/2
		for end < len(s) && !utf8.RuneStart(s[end]) {
			end++
		}
		s = s[:cut] + "..." + s[end:]
	}
	return strconv.Quote(s)
}
