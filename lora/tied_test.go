package lora_test

import (
	"path/filepath"
	"testing"

	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/internal/pefttest"
	"github.com/shira-ort/shira-ort/lora"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/peft"
)

// LoRA on the tied, square lm_head of models/peft/tied (embed.weight read
// by a Gather and, as lm_head, through an unfolded Transpose or
// Gemm(transB=1)): fusing it, and converting it to SHiRA at density 1, must
// reproduce torch's merge W += scale·B·A, not W += (scale·B·A)ᵀ.
func TestTied(t *testing.T) {
	orttest.Require(t)
	ck, err := peft.Open(pefttest.Path("tied", "lora"))
	if err != nil {
		t.Fatal(err)
	}
	mods, err := ck.Lora()
	if err != nil {
		t.Fatal(err)
	}
	e, err := lora.NewEngine(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for _, form := range []string{"matmul", "gemm"} {
		t.Run(form, func(t *testing.T) {
			m := pefttest.Open(t, "tied/"+form)
			res, err := lora.Resolve(mods, m)
			if err != nil {
				t.Fatal(err)
			}
			in := pefttest.TiedInputs(t)
			ref := pefttest.Reference(t, "tied", "lora", form+"_merged_out.npy")
			t.Logf("the adapter moves logits by %.3g", pefttest.MaxRelDiff(ref, pefttest.Reference(t, "tied", form+"_base_out.npy")))

			w, err := m.ReadWeights(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := lora.Fuse(t.Context(), e, w, res); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "fused.onnx")
			if err := m.WriteStandalone(t.Context(), w, out); err != nil {
				t.Fatal(err)
			}
			if d := pefttest.MaxRelDiff(pefttest.RunModelWith(t, out, in), ref); d > 1e-5 {
				t.Errorf("fused model differs from torch's merge by %g", d)
			}

			a, _, err := lora.ToShira(t.Context(), e, res, lora.ShiraOptions{Name: "tied", Density: 1, Fingerprint: m.Fingerprint()})
			if err != nil {
				t.Fatal(err)
			}
			if d := pefttest.MaxRelDiff(pefttest.RunExportedWith(t, m.Dir(), in, patch.Default(a)), ref); d > 1e-5 {
				t.Errorf("density-1 SHiRA differs from torch's merge by %g", d)
			}
		})
	}
}
