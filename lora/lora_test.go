package lora_test

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/internal/pefttest"
	"github.com/shira-ort/shira-ort/lora"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/peft"
)

func setup(t *testing.T) (*lora.Engine, *export.Model, map[string][]byte, []lora.Resolved) {
	t.Helper()
	orttest.Require(t)
	m := pefttest.Open(t, "base")
	w, err := m.ReadWeights(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ck, err := peft.Open(pefttest.Path("lora"))
	if err != nil {
		t.Fatal(err)
	}
	mods, err := ck.Lora()
	if err != nil {
		t.Fatal(err)
	}
	res, err := lora.Resolve(mods, m)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 5 { // the fixture's LoRA targets five modules
		t.Fatalf("%d modules, want 5", len(res))
	}
	e, err := lora.NewEngine(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e, m, w, res
}

// Fusing the PEFT LoRA checkpoint into the exposed weights (ORT computes
// the products) must reproduce torch's merged model.
func TestFuseMatchesTorch(t *testing.T) {
	e, m, w, res := setup(t)
	st, err := lora.Fuse(t.Context(), e, w, res)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "fused.onnx")
	if err := m.WriteStandalone(t.Context(), w, out); err != nil {
		t.Fatal(err)
	}
	got := pefttest.RunModel(t, out)
	d := pefttest.MaxRelDiff(got, pefttest.Reference(t, "lora", "merged_out.npy"))
	t.Logf("fused %d tensors (%d elements) with %s: product %v add %v; max relative difference to torch = %.3g", st.Tensors, st.Elements, st.Kernel, st.Product, st.Add, d)
	if wantORT := os.Getenv("SHIRA_TEST_NO_BLAS_CHILD") == "1"; wantORT != strings.HasPrefix(st.Kernel, "ONNX Runtime") {
		t.Fatalf("kernel %q without BLAS=%v", st.Kernel, wantORT)
	}
	if d > 1e-5 {
		t.Fatalf("fused model differs from torch by %g", d)
	}
}

// Both products (BLAS, the default, and ONNX Runtime's) equal a float64
// reference product in both layouts.
func TestDeltaLayouts(t *testing.T) {
	requireBLAS(t)
	e, _, _, res := setup(t)
	for _, r := range res {
		mod := r.Module
		for _, layout := range []peft.Layout{peft.OutIn, peft.InOut} {
			for _, delta := range []func(context.Context, *peft.LoraModule, peft.Layout) ([]float32, error){e.Delta, e.DeltaORT} {
				d, err := delta(t.Context(), &mod, layout)
				if err != nil {
					t.Fatal(err)
				}
				for o := 0; o < mod.Out; o++ {
					for i := 0; i < mod.In; i++ {
						var s float64
						for k := 0; k < mod.R; k++ {
							s += float64(mod.B[o*mod.R+k]) * float64(mod.A[k*mod.In+i])
						}
						s *= float64(mod.Scale)
						at := o*mod.In + i
						if layout == peft.InOut {
							at = i*mod.Out + o
						}
						if math.Abs(float64(d[at])-s) > 1e-5*max(1, math.Abs(s)) {
							t.Fatalf("%s %v (%d,%d): %g, want %g", mod.Module, layout, o, i, d[at], s)
						}
					}
				}
			}
		}
	}
}

// LoRA -> SHiRA: density 1 reproduces the fused model; lower densities
// report a growing error.
func TestToShira(t *testing.T) {
	e, m, _, res := setup(t)
	a, reps, err := lora.ToShira(t.Context(), e, res, lora.ShiraOptions{Name: "full", Density: 1, Fingerprint: m.Fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != len(res) {
		t.Fatalf("%d reports for %d modules", len(reps), len(res))
	}
	for _, r := range reps {
		if r.RelError > 1e-6 {
			t.Errorf("%s: density 1 leaves relative error %g", r.Module, r.RelError)
		}
	}
	got := pefttest.RunExported(t, m.Dir(), patch.Default(a))
	if d := pefttest.MaxRelDiff(got, pefttest.Reference(t, "lora", "merged_out.npy")); d > 1e-5 {
		t.Fatalf("density-1 SHiRA differs from torch LoRA merge by %g", d)
	}
	prev := 0.0
	for _, density := range []float64{0.5, 0.1, 0.02} {
		_, reps, err := lora.ToShira(t.Context(), e, res, lora.ShiraOptions{Density: density})
		if err != nil {
			t.Fatal(err)
		}
		if len(reps) != len(res) {
			t.Fatalf("density %g: %d reports for %d modules", density, len(reps), len(res))
		}
		worst := 0.0
		for _, r := range reps {
			worst = max(worst, r.RelError)
		}
		t.Logf("density %.2f: worst per-tensor relative error %.3f", density, worst)
		if worst < prev {
			t.Errorf("error fell from %g to %g as density dropped", prev, worst)
		}
		prev = worst
	}
}
