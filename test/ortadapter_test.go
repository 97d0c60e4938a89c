package test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/ortadapter"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/ort"
)

// TestOrtAdapterEqualsLivePatch checks export-ort-adapter's
// output: the exposed weights with adapters applied, written as an ONNX
// Runtime .onnx_adapter file, are accepted by ORT's LoRA API, and a live
// session running with that adapter active (no SHiRA patch) computes,
// bit for bit, what the live session patched with the same adapters
// computes. The adapter's parameters are fed as the overridable weights'
// values, so ORT runs the same kernels.
func TestOrtAdapterEqualsLivePatch(t *testing.T) {
	orttest.Require(t)
	for _, mc := range modelCases[:7] { // the shipped models: fp32, Conv, fp16, bf16, external data
		t.Run(mc.name, func(t *testing.T) {
			dir, m, w := exportModel(t, mc.path(t), export.Options{})
			plain, err := ort.Open(context.Background(), dir, &ort.Options{Mode: ort.ModeLive})
			if err != nil {
				t.Fatal(err)
			}
			defer plain.Close()
			patched, err := ort.Open(context.Background(), dir, &ort.Options{Mode: ort.ModeLive})
			if err != nil {
				t.Fatal(err)
			}
			defer patched.Close()
			feeds := randomInputs(t, plain.Inputs(), 2, 7, nil)
			base := mustRun(t, plain, feeds)

			for name, cfgs := range adapterConfigs(t, m, w) {
				_, fused := fusedModel(t, dir, cfgs)
				touched := map[string]bool{}
				for _, c := range cfgs {
					for i := range c.Adapter.Tensors {
						touched[c.Adapter.Tensors[i].Name] = true
					}
				}
				var oa ortadapter.Adapter
				for _, e := range m.Tensors {
					if touched[e.Name] {
						oa.Parameters = append(oa.Parameters, ortadapter.Parameter{Name: e.Name, DType: e.DType, Dims: e.Shape, Data: fused[e.Name]})
					}
				}
				path := filepath.Join(t.TempDir(), "a.onnx_adapter")
				if err := ortadapter.Write(path, &oa); err != nil {
					t.Fatal(err)
				}
				la, err := ort.LoadLoraAdapter(path)
				if err != nil {
					t.Fatalf("%s: ORT rejects the .onnx_adapter file: %v", name, err)
				}
				got, err := plain.RunLoRA(context.Background(), feeds, la)
				if err != nil {
					t.Fatalf("%s: RunLoRA: %v", name, err)
				}
				if err := patched.Set(context.Background(), cfgs...); err != nil {
					t.Fatal(err)
				}
				want := mustRun(t, patched, feeds)
				if equalOutputs(want, base) {
					t.Errorf("%s: the adapter did not change any output", name)
				}
				if diff := firstDifference(got, want); diff != "" {
					t.Errorf("%s: ORT adapter run != live SHiRA patch: %s", name, diff)
				}
				// The adapter is active for that Run only.
				if diff := firstDifference(mustRun(t, plain, feeds), base); diff != "" {
					t.Errorf("%s: Run after RunLoRA: %s", name, diff)
				}
				la.Close()
				if _, err := plain.RunLoRA(context.Background(), feeds, la); err == nil {
					t.Errorf("%s: RunLoRA with a closed adapter succeeded", name)
				}
			}
		})
	}
}
