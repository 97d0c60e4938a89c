package closest

import (
	"slices"
	"testing"
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
