package closest

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"abc", "", 3}, {"kitten", "sitting", 3}, {"fc1.weight", "fc2.weight", 1}} {
		if got := Distance(c.a, c.b); got != c.d {
			t.Errorf("Distance(%q, %q) = %d, want %d", c.a, c.b, got, c.d)
		}
	}
}

// TestRank checks the order (distance, then name), that duplicates are
// kept once and the distances reported.
func TestRank(t *testing.T) {
	got := Rank("fc1.weigth", []string{"head.weight", "fc2.weight", "fc1.weight", "fc2.weight", "fc0.weight"})
	want := []Match{{"fc1.weight", 2}, {"fc0.weight", 3}, {"fc2.weight", 3}, {"head.weight", 6}}
	if !slices.Equal(got, want) {
		t.Fatalf("Rank = %+v, want %+v", got, want)
	}
	if got := Rank("x", nil); len(got) != 0 {
		t.Fatalf("Rank of no candidates = %+v", got)
	}
}

// TestRankLongNamesBounded: names from untrusted files may be megabytes
// long; ranking them must not cost len(name)·len(candidate).
func TestRankLongNamesBounded(t *testing.T) {
	long := strings.Repeat("layer.", 4<<20/6)
	cands := []string{"fc1.weight", "fc2.weight", long + "x", long[:MaxCompare], long[:MaxCompare+1]}
	done := make(chan []Match, 1)
	go func() { done <- Rank(long, cands) }()
	select {
	case got := <-done:
		if len(got) != len(cands) {
			t.Fatalf("Rank returned %d matches, want %d", len(got), len(cands))
		}
		for _, m := range got {
			if m.Distance < abs(len(m.Name)-len(long)) {
				t.Errorf("distance %d of a %d-byte candidate from a %d-byte name is below the length difference", m.Distance, len(m.Name), len(long))
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Rank of a 4 MB name did not return within 10 s")
	}
	// short names are still ranked exactly
	if got := Rank("fc1.weigth", []string{long, "fc1.weight"}); got[0] != (Match{"fc1.weight", 2}) {
		t.Fatalf("Rank with a long candidate = %+v", got[0])
	}
}

func abs(x int) int { return max(x, -x) }

// TestQuoteElide: short names are shown whole; a long one by its head and
// tail, in at most about MaxShown bytes, without splitting a character.
func TestQuoteElide(t *testing.T) {
	if got := Quote("fc1.weight"); got != `"fc1.weight"` {
		t.Errorf("Quote(short) = %s", got)
	}
	if got := Elide("fc1.weight"); got != "fc1.weight" {
		t.Errorf("Elide(short) = %s", got)
	}
	exact := strings.Repeat("x", MaxShown)
	if Quote(exact) != strconv.Quote(exact) || Elide(exact) != exact {
		t.Errorf("a %d-byte name is elided", MaxShown)
	}
	long := "model.layers.0." + strings.Repeat("é", 2<<20) + ".q_proj.weight"
	q, e := Quote(long), Elide(long)
	for _, s := range []string{q, e} {
		if len(s) > MaxShown+40 || !utf8.ValidString(s) || !strings.Contains(s, "bytes)…") {
			t.Errorf("a %d-byte name is shown in %d bytes: %s", len(long), len(s), s)
		}
	}
	if !strings.HasPrefix(q, `"model.layers.0.`) || !strings.HasSuffix(q, `.q_proj.weight"`) {
		t.Errorf("Quote(long) = %s", q)
	}
	if !strings.HasPrefix(e, "model.layers.0.") || !strings.HasSuffix(e, ".q_proj.weight") {
		t.Errorf("Elide(long) = %s", e)
	}
}
