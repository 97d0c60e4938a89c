package peft_test

import (
	"testing"

	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/internal/pefttest"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/peft"
)

// tiedForms are the two exports of models/peft/tied's LM, whose lm_head
// weight is the embedding: "matmul" reads embed.weight through a Transpose
// export cannot fold (the embedding's Gather reads it directly), "gemm"
// through Gemm(transB=1).
var tiedForms = []string{"matmul", "gemm"}

// Converting a SHiRA checkpoint on the tied lm_head (a square weight, so a
// transposed mapping would pass every shape check) and patching the live
// session must reproduce torch's merged model in both forms.
func TestConvertShiraTied(t *testing.T) {
	orttest.Require(t)
	ck, err := peft.Open(pefttest.Path("tied", "shira"))
	if err != nil {
		t.Fatal(err)
	}
	for _, form := range tiedForms {
		t.Run(form, func(t *testing.T) {
			m := pefttest.Open(t, "tied/"+form)
			in := pefttest.TiedInputs(t)
			base := pefttest.RunExportedWith(t, m.Dir(), in)
			if d := pefttest.MaxRelDiff(base, pefttest.Reference(t, "tied", form+"_base_out.npy")); d > 1e-5 {
				t.Fatalf("base model differs from torch by %g", d)
			}
			a, reps, err := peft.ConvertShira(ck, m, peft.ConvertOptions{Name: "tied"})
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"lm_head": "embed.weight [out,in]", "proj": "proj.weight.T [in,out]"}
			if len(reps) != len(want) {
				t.Fatalf("%d modules converted, want %d", len(reps), len(want))
			}
			for _, r := range reps {
				if got := r.Tensor + " " + r.Layout; got != want[r.Module] {
					t.Errorf("%s -> %s, want %s", r.Module, got, want[r.Module])
				}
			}
			got := pefttest.RunExportedWith(t, m.Dir(), in, patch.Default(a))
			ref := pefttest.Reference(t, "tied", "shira", form+"_merged_out.npy")
			d := pefttest.MaxRelDiff(got, ref)
			t.Logf("max relative difference to torch merged = %.3g (adapter moves logits by %.3g)", d, pefttest.MaxRelDiff(ref, base))
			if d > 1e-5 {
				t.Fatalf("patched session differs from torch merged model by %g", d)
			}
		})
	}
}
