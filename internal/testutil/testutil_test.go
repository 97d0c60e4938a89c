package testutil

import "testing"

var knob = 1

func TestReplaceRestores(t *testing.T) {
	t.Run("sub", func(t *testing.T) {
		Replace(t, &knob, 2)
		if knob != 2 {
			t.Fatalf("knob = %d after Replace, want 2", knob)
		}
		knob = 3 // later changes are undone too
	})
	if knob != 1 {
		t.Fatalf("knob = %d after the subtest, want 1", knob)
	}
}

func TestReplaceNested(t *testing.T) {
	t.Run("sub", func(t *testing.T) {
		Replace(t, &knob, 2)
		Replace(t, &knob, 5) // cleanups run last-in first-out: 5 -> 2 -> 1
	})
	if knob != 1 {
		t.Fatalf("knob = %d after two Replaces, want 1", knob)
	}
}
