package peft_test

import (
	"errors"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/internal/pefttest"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/peft"
)

// The torch-exported model's weights are transposed onnx::MatMul_N
// initializers (and lm_head.weight under Gemm transB=1); converting a PEFT
// SHiRA checkpoint and patching the live session must reproduce torch's
// merged output.
func TestConvertShiraMatchesTorch(t *testing.T) {
	orttest.Require(t)
	m := pefttest.Open(t, "base")
	dir := m.Dir()
	base := pefttest.RunExported(t, dir)
	if d := pefttest.MaxRelDiff(base, pefttest.Reference(t, "base_out.npy")); d > 1e-5 {
		t.Fatalf("base model differs from torch by %g", d)
	}
	for _, name := range []string{"shira_a", "shira_b"} { // shira_b stores indices as F32
		t.Run(name, func(t *testing.T) {
			ck, err := peft.Open(pefttest.Path(name))
			if err != nil {
				t.Fatal(err)
			}
			a, reps, err := peft.ConvertShira(ck, m, peft.ConvertOptions{Name: name})
			if err != nil {
				t.Fatal(err)
			}
			if len(reps) != 13 {
				t.Fatalf("%d modules converted, want 13", len(reps))
			}
			for _, r := range reps {
				want := "[in,out]"
				if r.Module == "lm_head" {
					want = "[out,in]"
				}
				if r.Layout != want {
					t.Errorf("%s -> %s layout %s, want %s", r.Module, r.Tensor, r.Layout, want)
				}
			}
			got := pefttest.RunExported(t, dir, patch.Default(a))
			ref := pefttest.Reference(t, name, "merged_out.npy")
			d := pefttest.MaxRelDiff(got, ref)
			t.Logf("%s: max relative difference to torch merged = %.3g (adapter moves logits by %.3g)", name, d, pefttest.MaxRelDiff(ref, base))
			if d > 1e-5 {
				t.Fatalf("patched session differs from torch merged model by %g", d)
			}
		})
	}
}

func TestResolveTorchNames(t *testing.T) {
	mp := peft.NewMapper(pefttest.Open(t, "base"))
	for module, want := range map[string]string{
		"base_model.model.model.layers.0.self_attn.q_proj": "onnx::MatMul_59",
		"model.layers.1.mlp.down_proj":                     "onnx::MatMul_70",
		"layers.1.mlp.down_proj":                           "onnx::MatMul_70", // checkpoint of the inner model
		"lm_head":                                          "lm_head.weight",
	} {
		tg, err := mp.Resolve(module)
		if err != nil {
			t.Errorf("%s: %v", module, err)
			continue
		}
		if tg.Entry.Name != want {
			t.Errorf("%s -> %s, want %s", module, tg.Entry.Name, want)
		}
	}
	_, err := mp.Resolve("model.layers.0.self_attn.qproj")
	if !errors.Is(err, peft.ErrNoMatch) {
		t.Fatalf("err = %v, want ErrNoMatch", err)
	}
	t.Log(err)
	if _, err := mp.Resolve("q_proj"); err == nil { // two layers have a q_proj
		t.Fatal("ambiguous module resolved")
	}
}

var _ = adapter.Delta
