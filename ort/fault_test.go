package ort

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

var errInjected = errors.New("injected rebuild failure")

// TestFailedRebuildKeepsServing injects a failing session build into the
// baked and hybrid switch paths. Baked: the switch fails, the weights are
// bit-identical to before and Runs keep returning the previous
// configuration's outputs. Hybrid: the switch itself is live and succeeds;
// the failed rebuild is reported by WaitBaked, Runs keep being served (live)
// with the new configuration, and the next switch rebuilds normally.
func TestFailedRebuildKeepsServing(t *testing.T) {
	requireORT(t)
	defer func() { failBakedBuild = nil }()
	dir, m := optModelDir(t)
	in := optInputs(t, 1, 3)
	A := patch.Default(randomAdapter(t, m, 0.05, 41))
	B := patch.Default(randomAdapter(t, m, 0.05, 42))
	outA := fusedOutputs(t, dir, []patch.Config{A}, &Options{IntraOpThreads: 1}, in)
	outB := fusedOutputs(t, dir, []patch.Config{B}, &Options{IntraOpThreads: 1}, in)
	same := func(a, b map[string]*tensor.Tensor) bool {
		return bytes.Equal(a["Y"].Data, b["Y"].Data) && bytes.Equal(a["Z"].Data, b["Z"].Data)
	}
	weights := func(s *Session) [][]byte {
		var out [][]byte
		for _, w := range s.Weights() {
			out = append(out, bytes.Clone(weightBytes(t, s, w.Name)))
		}
		return out
	}

	t.Run("baked", func(t *testing.T) {
		failBakedBuild = nil
		s := mustOpen(t, dir, &Options{Mode: ModeBaked, IntraOpThreads: 1})
		if err := s.Set(context.Background(), A); err != nil {
			t.Fatal(err)
		}
		before := weights(s)
		for _, step := range []func() error{
			func() error { return s.Set(context.Background(), B) },
			func() error { return s.Apply(context.Background(), B) },
			func() error { return s.Revert(context.Background()) },
		} {
			failBakedBuild = func() error { return errInjected }
			if err := step(); !errors.Is(err, errInjected) {
				t.Fatalf("switch with a failing build: %v", err)
			}
			failBakedBuild = nil
			if !same(mustRun(t, s, in), outA) {
				t.Fatal("after a failed switch the session does not serve the previous configuration")
			}
			for i, w := range weights(s) {
				if !bytes.Equal(w, before[i]) {
					t.Fatal("a failed switch changed the weights")
				}
			}
		}
		if err := s.Set(context.Background(), B); err != nil {
			t.Fatal(err)
		}
		if !same(mustRun(t, s, in), outB) {
			t.Fatal("the switch after the failures is wrong")
		}
	})

	t.Run("hybrid", func(t *testing.T) {
		failBakedBuild = nil
		s := mustOpen(t, dir, &Options{Mode: ModeHybrid, IntraOpThreads: 1})
		if err := s.Set(context.Background(), A); err != nil {
			t.Fatal(err)
		}
		waitBaked(t, s)
		failBakedBuild = func() error { return errInjected }
		if err := s.Set(context.Background(), B); err != nil {
			t.Fatalf("hybrid switch: %v", err)
		}
		if err := s.WaitBaked(context.Background()); !errors.Is(err, errInjected) {
			t.Fatalf("WaitBaked after a failing rebuild: %v", err)
		}
		if s.Baked() {
			t.Fatal("a failed rebuild was swapped in")
		}
		live := mustRun(t, s, in)
		ref := mustOpen(t, dir, &Options{Mode: ModeLive, IntraOpThreads: 1})
		if err := ref.Set(context.Background(), B); err != nil {
			t.Fatal(err)
		}
		if !same(live, mustRun(t, ref, in)) {
			t.Fatal("after a failed rebuild the live session does not serve the new configuration")
		}
		failBakedBuild = nil
		if err := s.Set(context.Background(), A); err != nil {
			t.Fatal(err)
		}
		waitBaked(t, s)
		if !same(mustRun(t, s, in), outA) {
			t.Fatal("the rebuild after the failure is wrong")
		}
	})
}
