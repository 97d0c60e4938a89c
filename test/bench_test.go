package test

import (
	"context"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/internal/synth"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
)

// BenchmarkDemoModelSwitch measures one adapter switch (revert the active
// adapter, apply the other) on the live session of the demo model, the
// same adapters `shira-ort demo` uses (2 % of every weight).
//
//	go test -run '^$' -bench DemoModelSwitch ./test/
func BenchmarkDemoModelSwitch(b *testing.B) {
	orttest.Require(b)
	dir, m, w := exportModel(b, repoPath("models", "tiny", "model.onnx"), export.Options{})
	sess, err := ort.Open(context.Background(), dir, &ort.Options{IntraOpThreads: 1, Mode: ort.ModeLive})
	if err != nil {
		b.Fatal(err)
	}
	defer sess.Close()
	cfgs := [2]patch.Config{
		{Adapter: makeAdapter(b, m, w, synth.Options{Mask: synth.MaskRandom, Density: 0.02, Scale: 0.8, Seed: 11, Semantics: adapter.Delta}), Alpha: 1},
		{Adapter: makeAdapter(b, m, w, synth.Options{Mask: synth.MaskWeightMagnitude, Density: 0.02, Scale: 0.8, Seed: 12, Semantics: adapter.Delta}), Alpha: 1},
	}
	i := 0
	for b.Loop() {
		if err := sess.Set(context.Background(), cfgs[i%2]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	if err := sess.Revert(context.Background()); err != nil {
		b.Fatal(err)
	}
}
