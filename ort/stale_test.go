package ort

import (
	"runtime"
	"testing"

	"github.com/shira-ort/shira-ort/internal/ortshim"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// TestStaleFoldedWeightsAreDetected is the control for TestModesMatchFused:
// a baked session that hands ORT the patched weights after optimization
// (AddInitializer, as a naive rebuild would) computes the folded Transpose
// and the NCHWc Conv from the file's stale weights, and the comparison with
// the offline-fused model catches it. (The NCHWc transform is x86-64 only:
// on arm64 only the folded Transpose output is stale.)
func TestStaleFoldedWeightsAreDetected(t *testing.T) {
	requireORT(t)
	dir, m := optModelDir(t)
	in := optInputs(t, 2, 5)
	A := patch.Default(randomAdapter(t, m, 0.05, 1))
	s := mustOpen(t, dir, &Options{Mode: ModeBaked, IntraOpThreads: 1})
	want := fusedOutputs(t, dir, []patch.Config{A}, &Options{IntraOpThreads: 1}, in)

	s.switchMu.lock()
	defer s.switchMu.unlock()
	if err := s.patcher.Set(A); err != nil {
		t.Fatal(err)
	}
	defer s.patcher.Revert()
	so, _, err := s.opts.sessionOptions(nil, false)
	if err != nil {
		t.Fatal(err)
	}
	defer so.Release()
	so.AddConfigEntry("session.disable_prepacking", "1")
	so.AddConfigEntry("session.model_external_initializers_file_folder_path", dir)
	for _, w := range s.weights {
		if err := so.AddInitializer(w.info.Name, w.value); err != nil {
			t.Fatal(err)
		}
	}
	sess, err := ortshim.NewSessionFromBytes(s.bakedSrc.model, so)
	if err != nil {
		t.Fatal(err)
	}
	e := newEngine(sess, false)
	e.setNames(s)
	defer e.release()
	var vals []*ortshim.Value
	for _, info := range s.inputs {
		x := in[info.Name]
		v, err := ortshim.NewTensorValue(x.Data, x.DType, x.Shape)
		if err != nil {
			t.Fatal(err)
		}
		defer v.Release()
		vals = append(vals, v)
	}
	outs, err := e.raw.Run(nil, e.inNames, vals, e.outNames)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*tensor.Tensor{}
	for i, o := range outs {
		got[e.outNames.At(i)] = o
	}
	for name := range want {
		if sameOutputs(map[string]*tensor.Tensor{name: got[name]}, map[string]*tensor.Tensor{name: want[name]}) {
			if name == "Y" && runtime.GOARCH != "amd64" {
				// ORT's NCHWc Conv layout (which copies Wc at optimization
				// time) exists only in MLAS's x86-64 kernels; elsewhere the
				// Conv reads the AddInitializer'd weights, so Y is not stale.
				t.Logf("output Y is not stale on %s: no NCHWc Conv transform", runtime.GOARCH)
				continue
			}
			t.Errorf("output %s of the stale session equals the fused model's: the fused comparison would not catch stale %s weights", name, name)
		}
	}
}
