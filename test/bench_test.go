package test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/demo/charlm"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/internal/synth"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
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

// BenchmarkTextGeneratorRun compares a packed session of the exported
// text generator (models/charlm, a small transformer: many activations
// per Run, which a packed session allocates through the project's own
// allocator instead of ORT's arena) with a plain ORT session of the
// original model, 2 threads, 64 tokens, batch 1 and 16, the two taking
// turns every b.N Runs (sub-benchmarks of one -count run alternate).
//
//	go test -run '^$' -bench TextGeneratorRun -count 5 ./test/
func BenchmarkTextGeneratorRun(b *testing.B) {
	orttest.Require(b)
	ctx := context.Background()
	dir := b.TempDir()
	ws, err := charlm.Prepare(ctx, dir)
	if err != nil {
		b.Fatal(err)
	}
	defer ws.Close()
	plain, err := ort.OpenModel(ctx, filepath.Join(dir, "model.onnx"), &ort.Options{IntraOpThreads: 2})
	if err != nil {
		b.Fatal(err)
	}
	defer plain.Close()
	packed, err := ort.OpenExported(ctx, ws.Model, &ort.Options{IntraOpThreads: 2, Mode: ort.ModePacked})
	if err != nil {
		b.Fatal(err)
	}
	defer packed.Close()
	if packed.Mode() != ort.ModePacked {
		b.Fatalf("fell back: %s", packed.FallbackReason())
	}
	for _, batch := range []int{1, 16} {
		ids := make([]int64, batch*64)
		for i := range ids {
			ids[i] = int64(i % 90)
		}
		x, err := tensor.FromInt64([]int64{int64(batch), 64}, ids)
		if err != nil {
			b.Fatal(err)
		}
		in := map[string]*tensor.Tensor{"tokens": x}
		for _, v := range []struct {
			name string
			s    *ort.Session
		}{{"plain", plain}, {"packed", packed}} {
			b.Run(fmt.Sprintf("batch=%d/%s", batch, v.name), func(b *testing.B) {
				if _, err := v.s.Run(ctx, in); err != nil {
					b.Fatal(err)
				}
				for b.Loop() {
					if _, err := v.s.Run(ctx, in); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
