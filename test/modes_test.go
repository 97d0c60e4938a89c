package test

import (
	"context"
	"testing"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/tensor"
)

// TestBakedAndHybridEqualStandaloneFusion: in baked mode, and in hybrid
// mode once the background rebuild is in, a switched session runs the same
// prepacked kernels as plain ONNX Runtime on the offline-fused model, so
// the outputs are equal bit for bit on every model — including those where
// the live (unprepacked) kernels differ in the last bits. Revert returns to
// the base outputs bit for bit.
func TestBakedAndHybridEqualStandaloneFusion(t *testing.T) {
	orttest.Require(t)
	for _, mc := range modelCases {
		t.Run(mc.name, func(t *testing.T) {
			dir, m, w := exportModel(t, mc.path(t), export.Options{})
			cfgSets := adapterConfigs(t, m, w)
			var overrides map[string]*tensor.Tensor
			if mc.overrides != nil {
				overrides = mc.overrides(t)
			}
			for _, mode := range []ort.Mode{ort.ModeBaked, ort.ModeHybrid} {
				sess, err := ort.Open(context.Background(), dir, &ort.Options{Mode: mode})
				if err != nil {
					t.Fatal(err)
				}
				settle := func() {
					if mode == ort.ModeHybrid {
						if err := sess.WaitBaked(context.Background()); err != nil {
							t.Fatal(err)
						}
					}
				}
				feeds := randomInputs(t, sess.Inputs(), 3, 42, overrides)
				base := mustRun(t, sess, feeds)
				for name, cfgs := range cfgSets {
					if err := sess.Set(context.Background(), cfgs...); err != nil {
						t.Fatalf("%v %s: %v", mode, name, err)
					}
					settle()
					got := mustRun(t, sess, feeds)
					fusedPath, _ := fusedModel(t, dir, cfgs)
					plain, err := ort.OpenModel(context.Background(), fusedPath, nil)
					if err != nil {
						t.Fatal(err)
					}
					want := mustRun(t, plain, feeds)
					plain.Close()
					if diff := firstDifference(got, want); diff != "" {
						t.Errorf("%v %s: session != plain ORT on the offline-fused model: %s", mode, name, diff)
					}
					if err := sess.Revert(context.Background()); err != nil {
						t.Fatal(err)
					}
					settle()
					if diff := firstDifference(mustRun(t, sess, feeds), base); diff != "" {
						t.Errorf("%v %s: after revert: %s", mode, name, diff)
					}
				}
				sess.Close()
			}
		})
	}
}
