package ort

import (
	"bytes"
	"context"
	"slices"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// TestSparseThenDenseApply: a sparse adapter (fewer entries than pages,
// so its pages are copied on write one by one, after Runs mapped them)
// followed by Apply of a dense one (whose weights are unmapped and
// populated in bulk first) must give the offline fusion of both, with the
// sparse adapter's value kept, in live and hybrid mode.
func TestSparseThenDenseApply(t *testing.T) {
	requireORT(t)
	dir, m := optModelDir(t)
	dense := randomAdapter(t, m, 0.3, 41)
	// One entry of Wc inside its first two (whole) pages that the dense
	// adapter does not overwrite.
	at := uint32(1000)
	for _, dt := range dense.Tensors {
		for dt.Name == "Wc" && slices.Contains(dt.Indices, at) {
			at++
		}
	}
	sparse := &adapter.Adapter{Name: "one", DefaultAlpha: 1, Semantics: adapter.Overwrite}
	st, err := adapter.NewTensor("Wc", tensor.Float32, []int64{16, 16, 3, 3}, []uint32{at}, []float32{7.5}, tensor.Float32)
	if err != nil {
		t.Fatal(err)
	}
	sparse.Tensors = append(sparse.Tensors, st)
	X, Y := patch.Default(sparse), patch.Default(dense)
	for _, mode := range []Mode{ModeLive, ModeHybrid} {
		s := mustOpen(t, dir, &Options{Mode: mode, IntraOpThreads: 1, RebuildDelay: -1})
		in := optInputs(t, 1, 2)
		if err := s.Set(context.Background(), X); err != nil {
			t.Fatal(err)
		}
		mustRun(t, s, in) // maps the weight pages
		if err := s.Apply(context.Background(), Y); err != nil {
			t.Fatal(err)
		}
		ws := fusedWeights(t, dir, []patch.Config{X, Y})
		for _, e := range m.Tensors {
			if !bytes.Equal(weightBytes(t, s, e.Name), ws[e.Name]) {
				t.Fatalf("%v: weight %s after Set(sparse) + Apply(dense) is not the fusion of both", mode, e.Name)
			}
		}
		if got := tensor.Float32s(weightBytes(t, s, "Wc"))[at]; got != 7.5 {
			t.Fatalf("%v: the sparse adapter's value is %v, want 7.5", mode, got)
		}
		s.Close()
	}
}
