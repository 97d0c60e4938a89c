package closest

import "testing"

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

func TestRank(t *testing.T) {
	got := Rank("fc1.weigth", []string{"head.weight", "fc2.weight", "fc1.weight", "fc2.weight"})
	if len(got) != 3 || got[0].Name != "fc1.weight" || got[1].Name != "fc2.weight" {
		t.Fatalf("%+v", got)
	}
}
