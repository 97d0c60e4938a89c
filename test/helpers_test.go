// Package test holds the end-to-end tests: export → create → live patch must
// equal apply → run bit for bit, and revert must equal the base bit for bit.
package test

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/synth"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// repoPath returns a path relative to the repository root.
func repoPath(parts ...string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(append([]string{filepath.Dir(file), ".."}, parts...)...)
}

// exportModel exposes a model into a fresh temporary directory.
func exportModel(tb testing.TB, src string, opts export.Options) (string, *export.Manifest, map[string][]byte) {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "exported")
	if _, err := export.Expose(tb.Context(), src, dir, opts); err != nil {
		tb.Fatalf("export %s: %v", src, err)
	}
	em := openModel(tb, dir)
	w, err := em.ReadWeights(tb.Context())
	if err != nil {
		tb.Fatal(err)
	}
	return dir, em.Manifest(), w
}

// openModel opens an exported directory (closed when the test ends).
func openModel(tb testing.TB, dir string) *export.Model {
	tb.Helper()
	m, err := export.Open(dir)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

// weight returns a copy of the exposed weight name of s.
func weight(tb testing.TB, s *ort.Session, name string) []byte {
	tb.Helper()
	b, err := s.Weight(name)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// makeAdapter creates a synthetic adapter, writes it to disk and opens it
// back through the mmapped reader, as a user would.
func makeAdapter(tb testing.TB, m *export.Manifest, weights map[string][]byte, o synth.Options) *adapter.Adapter {
	tb.Helper()
	a, err := synth.New(m, weights, o)
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), fmt.Sprintf("%s-%d.shira", o.Mask, o.Seed))
	if err := adapter.Write(path, a); err != nil {
		tb.Fatal(err)
	}
	opened, err := adapter.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { opened.Close() })
	return opened
}

// fusedModel applies cfgs offline to a copy of the weights (what
// `shira-ort apply` does: Model.Fuse, Model.WriteStandalone), writes a
// standalone model and returns its path and the fused weights.
func fusedModel(tb testing.TB, dir string, cfgs []patch.Config) (string, map[string][]byte) {
	tb.Helper()
	m := openModel(tb, dir)
	weights, err := m.Fuse(tb.Context(), cfgs)
	if err != nil {
		tb.Fatal(err)
	}
	out := filepath.Join(tb.TempDir(), "fused.onnx")
	if err := m.WriteStandalone(tb.Context(), weights, out); err != nil {
		tb.Fatal(err)
	}
	return out, weights
}

// randomInputs makes deterministic inputs for every model input, with
// dynamic dimensions set to dyn; overrides replace individual inputs.
func randomInputs(tb testing.TB, infos []ort.IOInfo, dyn int64, seed uint64, overrides map[string]*tensor.Tensor) map[string]*tensor.Tensor {
	tb.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	feeds := map[string]*tensor.Tensor{}
	for _, in := range infos {
		if t, ok := overrides[in.Name]; ok {
			feeds[in.Name] = t
			continue
		}
		shape := make([]int64, len(in.Shape))
		for i, d := range in.Shape {
			if d < 0 {
				d = dyn
			}
			shape[i] = d
		}
		n, err := tensor.NumElements(shape)
		if err != nil {
			tb.Fatal(err)
		}
		vals := make([]float32, n)
		for i := range vals {
			vals[i] = float32(rng.NormFloat64())
		}
		var t *tensor.Tensor
		switch in.DType {
		case tensor.Float32:
			t, err = tensor.FromFloat32(shape, vals)
		case tensor.Float16:
			h := make([]uint16, n)
			for i, v := range vals {
				h[i] = tensor.Float32ToFloat16(v)
			}
			t, err = tensor.New(tensor.Float16, shape, tensor.Bytes(h))
		default:
			tb.Fatalf("input %q: no generator for %v; pass an override", in.Name, in.DType)
		}
		if err != nil {
			tb.Fatal(err)
		}
		feeds[in.Name] = t
	}
	return feeds
}
