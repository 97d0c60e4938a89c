package ort

import (
	"context"
	"fmt"
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

// TestPackedTenThousandSteps: 10 000 random Set / Apply / Revert steps with
// random α over adapters with overlapping indices (overwrite and delta,
// float32, float16 and bfloat16 values), and refused configurations (a
// valid tensor, then one with an out-of-range index), on a packed session.
// A reference patch.Patcher runs the same steps on a copy of the unpacked
// weights; after every step each of ORT's packed buffers must hold exactly
// (bitwise) the packed form of the reference weight, and every 500 steps
// the session's outputs must equal a plain ORT session on the offline-fused
// model. A refused step changes nothing. The session keeps translations
// in a small cache, so steps reuse, miss and evict them.
func TestPackedTenThousandSteps(t *testing.T) {
	requireORT(t)
	requirePackedPlatform(t)
	for _, model := range []string{"float", "nbits", "qdq"} {
		t.Run(model, func(t *testing.T) { packedSteps(t, model) })
	}
}

// packedSteps runs TestPackedTenThousandSteps on one model: "float"
// (packedModelDir), "nbits" (packedModelDirQ: two of its four weights are
// 4-bit MatMulNBits weights) or "qdq" (a full-QDQ MLP of three int8
// weights per column, run as QLinearMatMul, whose packed buffers' column
// sums are checked too). The reference patches quantized weights as
// their codes (their schemes from the manifest).
func packedSteps(t *testing.T, model string) {
	steps := 10000
	if testing.Short() {
		steps = 1000
	}
	var dir string
	var m *export.Manifest
	in := packedInputs(t, 2, 9)
	switch model {
	case "qdq":
		src := filepath.Join(t.TempDir(), "qdq.onnx")
		if err := os.WriteFile(src, qdqmodel.BuildFullMLP(8, 40, 3), 0o644); err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(t.TempDir(), "exposed")
		var err error
		if m, err = export.Expose(context.Background(), src, dir, export.Options{}); err != nil {
			t.Fatal(err)
		}
		in = map[string]*tensor.Tensor{"x": mustF32(t, []int64{2, 40}, ramp(80, 9))}
	default:
		dir, m = packedModelDirQ(t, model == "nbits")
	}
	// A translation cache of about two of the five adapters: switches hit,
	// miss and evict (TestPackedMatchesFused covers the session without).
	s := mustOpen(t, dir, &Options{Mode: ModePacked, IntraOpThreads: 1, PackedTranslationCache: 48 << 10})
	if s.Mode() != ModePacked {
		t.Fatalf("fell back: %s", s.FallbackReason())
	}
	defer func() {
		c := &s.packed.cache
		t.Logf("translation cache: %d hits, %d misses, %d bytes of %d", c.hits, c.misses, c.bytes, c.budget)
		if c.hits == 0 || c.misses == 0 {
			t.Errorf("the translation cache was not exercised (%d hits, %d misses)", c.hits, c.misses)
		}
	}()
	rng := rand.New(rand.NewPCG(7, 77))
	base := fusedWeights(t, dir, nil)
	data := map[string][]byte{}
	for _, e := range m.Tensors {
		data[e.Name] = append([]byte(nil), base[e.Name]...)
	}
	ref, err := openExported(t, dir).PatchWeights(data)
	if err != nil {
		t.Fatal(err)
	}
	rp, err := patch.New(ref, patch.WithoutFingerprintCheck())
	if err != nil {
		t.Fatal(err)
	}
	valueTypes := []tensor.DType{tensor.Float32, tensor.Float16, tensor.BFloat16}
	var pool []*adapter.Adapter
	for k := range 5 {
		a := &adapter.Adapter{Name: fmt.Sprint("a", k), Semantics: adapter.Semantics(rng.IntN(2)), DefaultAlpha: 1}
		for _, e := range m.Tensors {
			if rng.IntN(4) == 0 {
				continue
			}
			shape := e.LogicalShape()
			n, _ := tensor.NumElements(shape)
			var ix []uint32
			var vals []float32
			density := 0.01 + rng.Float64()*0.3
			spread := float32(4)
			if e.Quant != nil {
				spread = 0.5
			}
			for i := range n {
				if rng.Float64() < density {
					ix = append(ix, uint32(i))
					vals = append(vals, (rng.Float32()-0.5)*spread)
				}
			}
			at, err := adapter.NewTensor(e.Name, e.DType, shape, ix, vals, valueTypes[rng.IntN(3)])
			if err != nil {
				t.Fatal(err)
			}
			a.Tensors = append(a.Tensors, at)
		}
		pool = append(pool, a)
	}
	bad := &adapter.Adapter{Name: "bad", Semantics: adapter.Delta, DefaultAlpha: 1}
	for _, e := range m.Tensors {
		n, _ := tensor.NumElements(e.LogicalShape())
		at, err := adapter.NewTensor(e.Name, e.DType, e.LogicalShape(), []uint32{0, uint32(n / 2)}, []float32{1, 2}, tensor.Float32)
		if err != nil {
			t.Fatal(err)
		}
		bad.Tensors = append(bad.Tensors, at)
	}
	bad.Tensors[len(bad.Tensors)-1].Indices[1] = uint32(1 << 30) // out of range, behind valid tensors

	check := func(step int, what string) {
		for _, w := range ref {
			for _, tg := range s.packed.targets[w.Name] {
				buf := tg.data
				if tg.qgemm != nil {
					buf = tg.full // the codes and their column sums
				}
				if !tg.layout.Matches(buf, w.Data) {
					t.Fatalf("step %d (%s): packed buffer %s is not the packed reference weight", step, what, tg.name)
				}
			}
		}
	}
	alphas := []float32{1, 1, 0.5, -1, 2.5, 0.25}
	randCfg := func() patch.Config {
		return patch.Config{Adapter: pool[rng.IntN(len(pool))], Alpha: alphas[rng.IntN(len(alphas))]}
	}
	var active []patch.Config
	ctx := context.Background()
	for step := range steps {
		var what string
		switch rng.IntN(6) {
		case 0, 1, 2:
			var cfgs []patch.Config
			for range rng.IntN(4) {
				cfgs = append(cfgs, randCfg())
			}
			what = fmt.Sprintf("Set %d", len(cfgs))
			if err := s.Set(ctx, cfgs...); err != nil {
				t.Fatal(err)
			}
			if err := rp.Set(cfgs...); err != nil {
				t.Fatal(err)
			}
			active = cfgs
		case 3:
			c := randCfg()
			what = "Apply"
			if err := s.Apply(ctx, c); err != nil {
				t.Fatal(err)
			}
			if err := rp.Apply(c); err != nil {
				t.Fatal(err)
			}
			active = append(active, c)
		case 4:
			what = "Revert"
			if err := s.Revert(ctx); err != nil {
				t.Fatal(err)
			}
			rp.Revert()
			active = nil
		case 5:
			what = "refused"
			if err := s.Set(ctx, randCfg(), patch.Config{Adapter: bad, Alpha: 1}); err == nil {
				t.Fatalf("step %d: an out-of-range index was accepted", step)
			}
			if err := s.Apply(ctx, patch.Config{Adapter: bad, Alpha: 1}); err == nil {
				t.Fatalf("step %d: Apply accepted an out-of-range index", step)
			}
		}
		check(step, what)
		if step%500 == 0 && len(active) > 0 {
			if got, want := mustRun(t, s, in), fusedOutputs(t, dir, active, &Options{IntraOpThreads: 1}, in); !sameOutputs(got, want) {
				t.Fatalf("step %d (%s): outputs differ from the offline-fused model", step, what)
			}
		}
	}
	if err := s.Revert(ctx); err != nil {
		t.Fatal(err)
	}
	rp.Revert()
	check(steps, "final revert")
	for _, w := range ref {
		if string(w.Data) != string(base[w.Name]) {
			t.Fatalf("reference %s not back to base", w.Name)
		}
	}
}
