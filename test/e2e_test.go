package test

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/internal/synth"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

type modelCase struct {
	name      string
	path      func(testing.TB) string
	overrides func(testing.TB) map[string]*tensor.Tensor
	minExpose int // at least this many weights must be exposed
}

func shipped(parts ...string) func(testing.TB) string {
	return func(testing.TB) string { return repoPath(parts...) }
}

func fetched(name string) func(testing.TB) string {
	return func(tb testing.TB) string { return orttest.ThirdPartyModel(tb, name) }
}

var modelCases = []modelCase{
	{name: "tiny", path: shipped("models", "tiny", "model.onnx"), minExpose: 3},
	{name: "transpose", path: shipped("models", "testdata", "transpose", "model.onnx"), minExpose: 2},
	{name: "constant", path: shipped("models", "testdata", "constant", "model.onnx"), minExpose: 2},
	{name: "conv", path: shipped("models", "testdata", "conv", "model.onnx"), minExpose: 3},
	{name: "fp16", path: shipped("models", "testdata", "fp16", "model.onnx"), minExpose: 2},
	{name: "bf16", path: shipped("models", "testdata", "bf16", "model.onnx"), minExpose: 1},
	{name: "external", path: shipped("models", "testdata", "external", "model.onnx"), minExpose: 2},
	{name: "openwakeword-hello_deepa", path: fetched("hello_deepa.onnx"), minExpose: 3},
	{name: "silero-vad", path: fetched("silero_vad_op18_ifless.onnx"), minExpose: 8,
		overrides: func(tb testing.TB) map[string]*tensor.Tensor {
			sr, _ := tensor.FromInt64(nil, []int64{16000})
			state, _ := tensor.Zeros(tensor.Float32, []int64{2, 1, 128})
			audio := make([]float32, 512) // one 32 ms chunk at 16 kHz
			for i := range audio {
				audio[i] = float32(math.Sin(float64(i)*0.07)) * 0.3
			}
			input, _ := tensor.FromFloat32([]int64{1, 512}, audio)
			return map[string]*tensor.Tensor{"sr": sr, "state": state, "input": input}
		}},
}

// adapterConfigs are the configurations every model is checked with: each
// semantics on its own, α ≠ 1, and a fused pair with overlapping indices.
func adapterConfigs(tb testing.TB, m *export.Manifest, w map[string][]byte) map[string][]patch.Config {
	randDelta := makeAdapter(tb, m, w, synth.Options{Name: "rand-delta", Mask: synth.MaskRandom, Density: 0.02, Scale: 0.2, Seed: 1, Semantics: adapter.Delta})
	wmOver := makeAdapter(tb, m, w, synth.Options{Name: "wm-overwrite", Mask: synth.MaskWeightMagnitude, Density: 0.02, Scale: 0.2, Seed: 2, Semantics: adapter.Overwrite})
	randOver := makeAdapter(tb, m, w, synth.Options{Name: "rand-overwrite", Mask: synth.MaskRandom, Density: 0.05, Scale: 0.2, Seed: 3, Semantics: adapter.Overwrite})
	return map[string][]patch.Config{
		"rand-delta":           {{Adapter: randDelta, Alpha: 1}},
		"wm-overwrite":         {{Adapter: wmOver, Alpha: 1}},
		"rand-delta-alpha0.3":  {{Adapter: randDelta, Alpha: 0.3}},
		"fused-three-adapters": {{Adapter: randDelta, Alpha: 0.7}, {Adapter: wmOver, Alpha: -0.5}, {Adapter: randOver, Alpha: 0.5}},
	}
}

func TestLivePatchEqualsOfflineFusion(t *testing.T) {
	orttest.Require(t)
	for _, mc := range modelCases {
		t.Run(mc.name, func(t *testing.T) {
			src := mc.path(t)
			dir, m, w := exportModel(t, src, export.Options{})
			if len(m.Tensors) < mc.minExpose {
				t.Fatalf("exposed %d weights, want at least %d", len(m.Tensors), mc.minExpose)
			}
			sess, err := ort.Open(context.Background(), dir, &ort.Options{Mode: ort.ModeLive})
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			var overrides map[string]*tensor.Tensor
			if mc.overrides != nil {
				overrides = mc.overrides(t)
			}
			feeds := randomInputs(t, sess.Inputs(), 3, 42, overrides)
			base := mustRun(t, sess, feeds)

			// The exported model computes what the original model computes.
			orig, err := ort.OpenModel(context.Background(), src, nil)
			if err != nil {
				t.Fatal(err)
			}
			compareClose(t, "exported vs original", base, mustRun(t, orig, feeds))
			orig.Close()

			for name, cfgs := range adapterConfigs(t, m, w) {
				if err := sess.Set(context.Background(), cfgs...); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				live := mustRun(t, sess, feeds)
				if equalOutputs(live, base) {
					t.Errorf("%s: the adapter did not change any output", name)
				}
				fusedPath, fusedWeights := fusedModel(t, dir, cfgs)
				// 1. ORT reads exactly the offline-fused weights.
				for _, e := range m.Tensors {
					if !bytes.Equal(weight(t, sess, e.Name), fusedWeights[e.Name]) {
						t.Errorf("%s: live weight %s != offline-fused weight", name, e.Name)
					}
				}
				// 2. Bitwise: the fused model, exported the same way (same
				// kernels: exposed weights are not prepacked), equals the live session.
				fdir, _, _ := exportModel(t, fusedPath, export.Options{})
				fsess, err := ort.Open(context.Background(), fdir, &ort.Options{Mode: ort.ModeLive})
				if err != nil {
					t.Fatal(err)
				}
				if diff := firstDifference(live, mustRun(t, fsess, feeds)); diff != "" {
					t.Errorf("%s: live patched session != session on the offline-fused model: %s", name, diff)
				}
				fsess.Close()
				// 3. The standalone fused model in plain ORT (weights prepacked,
				// other kernels may be chosen) agrees to fp32 rounding.
				plain, err := ort.OpenModel(context.Background(), fusedPath, nil)
				if err != nil {
					t.Fatal(err)
				}
				offline := mustRun(t, plain, feeds)
				plain.Close()
				compareClose(t, name+": live vs standalone fused model", live, offline)
				if diff := firstDifference(live, offline); diff != "" {
					t.Logf("%s: standalone fused model (prepacked kernels) differs in the last bits: %s", name, diff)
				}
				if err := sess.Revert(context.Background()); err != nil {
					t.Fatal(err)
				}
				if diff := firstDifference(mustRun(t, sess, feeds), base); diff != "" {
					t.Errorf("%s: after revert: %s", name, diff)
				}
			}
			// Revert leaves the weights exactly as exported.
			for _, e := range m.Tensors {
				if !bytes.Equal(weight(t, sess, e.Name), w[e.Name]) {
					t.Errorf("weight %s differs from the exported bytes after revert", e.Name)
				}
			}
		})
	}
}

func mustRun(tb testing.TB, s *ort.Session, feeds map[string]*tensor.Tensor) map[string]*tensor.Tensor {
	tb.Helper()
	out, err := s.Run(context.Background(), feeds)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

func equalOutputs(a, b map[string]*tensor.Tensor) bool { return firstDifference(a, b) == "" }

// firstDifference compares outputs bit for bit and describes the first
// difference, or returns "".
func firstDifference(a, b map[string]*tensor.Tensor) string {
	if len(a) != len(b) {
		return fmt.Sprintf("%d outputs vs %d", len(a), len(b))
	}
	for name, ta := range a {
		tb, ok := b[name]
		if !ok {
			return fmt.Sprintf("output %q missing", name)
		}
		if ta.DType != tb.DType || fmt.Sprint(ta.Shape) != fmt.Sprint(tb.Shape) {
			return fmt.Sprintf("output %q: %v%v vs %v%v", name, ta.DType, ta.Shape, tb.DType, tb.Shape)
		}
		if !bytes.Equal(ta.Data, tb.Data) {
			fa, _ := ta.AsFloat32()
			fb, _ := tb.AsFloat32()
			for i := range fa {
				if fa[i] != fb[i] {
					return fmt.Sprintf("output %q[%d]: %g vs %g", name, i, fa[i], fb[i])
				}
			}
			return fmt.Sprintf("output %q: bytes differ", name)
		}
	}
	return ""
}

// compareClose checks float outputs agree to a relative 1e-4 (the exported
// model runs its exposed weights unprepacked, which may reorder sums).
func compareClose(tb testing.TB, what string, a, b map[string]*tensor.Tensor) {
	tb.Helper()
	for name, ta := range a {
		fa, err1 := ta.AsFloat32()
		fb, err2 := b[name].AsFloat32()
		if err1 != nil || err2 != nil || len(fa) != len(fb) {
			tb.Fatalf("%s: output %q not comparable", what, name)
		}
		for i := range fa {
			d := fa[i] - fb[i]
			if d < 0 {
				d = -d
			}
			scale := max(abs32(fa[i]), abs32(fb[i]), 1)
			if d > 1e-3*scale {
				tb.Fatalf("%s: output %q[%d]: %g vs %g", what, name, i, fa[i], fb[i])
			}
		}
	}
}

func abs32(f float32) float32 {
	if f < 0 {
		return -f
	}
	return f
}

var _ = filepath.Join

// packedApplies lists the model cases a packed session applies to (every
// exposed weight is a MatMul/Gemm B that ORT prepacks); the others fall
// back to hybrid with a reason containing the text given.
var packedApplies = map[string]string{
	"tiny": "", "transpose": "", "constant": "", "fp16": "", "bf16": "", "external": "",
	"openwakeword-hello_deepa": "",
	// Conv weights (NCHWc reorder) are not patched in packed form.
	"conv":       "is a Conv weight: ORT reorders it",
	"silero-vad": "has rank 3",
}

// TestPackedEqualsPlainFusedModel: on every shipped and third-party model a
// packed session applies to, for every configuration of adapterConfigs,
// the packed session's outputs equal, bit for bit, plain ONNX Runtime on
// the offline-fused standalone model (`apply`), and revert restores the
// base outputs bit for bit; on the others the session falls back to
// hybrid, saying which weight it cannot patch in packed form.
func TestPackedEqualsPlainFusedModel(t *testing.T) {
	orttest.Require(t)
	for _, mc := range modelCases {
		t.Run(mc.name, func(t *testing.T) {
			want, known := packedApplies[mc.name]
			if !known {
				t.Fatalf("no packed expectation for %s", mc.name)
			}
			src := mc.path(t)
			dir, m, w := exportModel(t, src, export.Options{})
			sess, err := ort.Open(context.Background(), dir, &ort.Options{Mode: ort.ModePacked})
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			if runtime.GOARCH != "amd64" {
				if sess.Mode() != ort.ModeHybrid {
					t.Fatalf("packed on %s", runtime.GOARCH)
				}
				return
			}
			if want != "" {
				if sess.Mode() != ort.ModeHybrid || !strings.Contains(sess.FallbackReason(), want) {
					t.Fatalf("mode %v, fallback %q; want hybrid with a reason containing %q", sess.Mode(), sess.FallbackReason(), want)
				}
				return
			}
			if sess.Mode() != ort.ModePacked {
				t.Fatalf("fell back: %s", sess.FallbackReason())
			}
			var overrides map[string]*tensor.Tensor
			if mc.overrides != nil {
				overrides = mc.overrides(t)
			}
			feeds := randomInputs(t, sess.Inputs(), 3, 42, overrides)
			base := mustRun(t, sess, feeds)
			plainOf := func(path string) map[string]*tensor.Tensor {
				p, err := ort.OpenModel(context.Background(), path, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer p.Close()
				return mustRun(t, p, feeds)
			}
			basePath, _ := fusedModel(t, dir, nil)
			if diff := firstDifference(base, plainOf(basePath)); diff != "" {
				t.Fatalf("base: packed session != plain ORT on the exported model: %s", diff)
			}
			for name, cfgs := range adapterConfigs(t, m, w) {
				if err := sess.Set(context.Background(), cfgs...); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				got := mustRun(t, sess, feeds)
				if equalOutputs(got, base) {
					t.Errorf("%s: the adapter did not change any output", name)
				}
				fusedPath, _ := fusedModel(t, dir, cfgs)
				if diff := firstDifference(got, plainOf(fusedPath)); diff != "" {
					t.Errorf("%s: packed session != plain ORT on the offline-fused model: %s", name, diff)
				}
			}
			if err := sess.Revert(context.Background()); err != nil {
				t.Fatal(err)
			}
			if diff := firstDifference(mustRun(t, sess, feeds), base); diff != "" {
				t.Errorf("after revert: %s", diff)
			}
		})
	}
}
