package ort

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/qdqmodel"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// qdqModelDir exports the QDQ test model (int8 per axis, uint8 per tensor
// with zero point, int16 per axis with zero points) and returns the
// directory, its manifest and the source model's path.
func qdqModelDir(tb testing.TB) (string, *export.Manifest, string) {
	tb.Helper()
	dir := tb.TempDir()
	src := filepath.Join(dir, "qdq.onnx")
	if err := os.WriteFile(src, qdqmodel.Build(3), 0o644); err != nil {
		tb.Fatal(err)
	}
	out := filepath.Join(dir, "exported")
	m, err := export.Expose(context.Background(), src, out, export.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	return out, m, src
}

// quantAdapter touches density of every quantized weight with values in
// the dequantized domain: the base value plus noise of about scale·spread
// (overwrite) or the noise alone (delta).
func quantAdapter(tb testing.TB, m *export.Manifest, dir string, density float64, spread float32, sem adapter.Semantics, seed uint64) *adapter.Adapter {
	tb.Helper()
	em := openExported(tb, dir)
	base, err := em.ReadWeights(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 5))
	a := &adapter.Adapter{Name: "q", DefaultAlpha: 1, Semantics: sem}
	for _, e := range m.Tensors {
		s, err := e.Scheme()
		if err != nil || s == nil {
			tb.Fatalf("%s: scheme %v, %v", e.Name, s, err)
		}
		n := s.NumElements()
		var ix []uint32
		var vals []float32
		for i := range n {
			if rng.Float64() >= density {
				continue
			}
			step := s.Dequantize(i, 1) - s.Dequantize(i, 0)
			noise := float32(rng.NormFloat64()) * spread * step
			v := noise
			if sem == adapter.Overwrite {
				v += s.Dequantize(i, s.Code(base[e.Name], i))
			}
			ix = append(ix, uint32(i))
			vals = append(vals, v)
		}
		t, err := adapter.NewTensor(e.Name, e.DType, e.Shape, ix, vals, tensor.Float32)
		if err != nil {
			tb.Fatal(err)
		}
		a.Tensors = append(a.Tensors, t)
	}
	if err := a.Validate(); err != nil {
		tb.Fatal(err)
	}
	return a
}

// TestQuantizedSwitchMatchesFused: on a QDQ model, a live session (and
// the default mode, which falls back from packed to hybrid) patched with
// adapters computes bit for bit what plain ORT computes on the model fused
// offline, with one adapter and with two at fractional alphas, in both
// semantics; Revert gives the base outputs back bit for bit; the survival
// report says how much of the adapters' change the codes kept.
func TestQuantizedSwitchMatchesFused(t *testing.T) {
	requireORT(t)
	dir, m, src := qdqModelDir(t)
	in := map[string]*tensor.Tensor{"x": mustF32(t, []int64{4, qdqmodel.In}, ramp(4*qdqmodel.In, 7))}
	base := mustRun(t, mustOpenModel(t, src, nil), in)
	A := quantAdapter(t, m, dir, 0.05, 6, adapter.Overwrite, 1)
	B := quantAdapter(t, m, dir, 0.05, 3, adapter.Delta, 2)
	steps := []struct {
		name string
		cfgs []patch.Config
	}{
		{"A", []patch.Config{{Adapter: A, Alpha: 1}}},
		{"B", []patch.Config{{Adapter: B, Alpha: 1}}},
		{"A 0.5 + B 0.75", []patch.Config{{Adapter: A, Alpha: 0.5}, {Adapter: B, Alpha: 0.75}}},
		{"B 2", []patch.Config{{Adapter: B, Alpha: 2}}},
	}
	for _, mode := range []Mode{ModeLive, ModeDefault} {
		s := mustOpen(t, dir, &Options{Mode: mode, IntraOpThreads: 1})
		if mode == ModeDefault && s.Mode() == ModePacked {
			t.Fatalf("a quantized model opened packed")
		}
		if got := mustRun(t, s, in); !sameOutputs(got, base) {
			t.Fatalf("%v: the exported model's base outputs differ from the source's", mode)
		}
		for _, st := range steps {
			if err := s.Set(context.Background(), st.cfgs...); err != nil {
				t.Fatalf("%v %s: %v", mode, st.name, err)
			}
			want := fusedOutputs(t, dir, st.cfgs, &Options{IntraOpThreads: 1}, in)
			if got := mustRun(t, s, in); !sameOutputs(got, want) {
				t.Fatalf("%v %s: outputs differ from the offline-fused model's", mode, st.name)
			}
			if sameOutputs(want, base) {
				t.Fatalf("%v %s: the adapter changed nothing", mode, st.name)
			}
		}
		if err := s.Revert(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := mustRun(t, s, in); !sameOutputs(got, base) {
			t.Fatalf("%v: revert did not restore the base outputs bit for bit", mode)
		}
	}
}
