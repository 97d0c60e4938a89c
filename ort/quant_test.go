package ort

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/internal/ortshim"
	"github.com/shira-ort/shira-ort/internal/qdqmodel"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// qdqModelDir exports the QDQ test model (int8 per axis, uint8 per tensor
// with zero point, int16 per axis with zero points) and returns the
// directory, its manifest and the source model's path.
func qdqModelDir(tb testing.TB) (string, *export.Manifest, string) {
	tb.Helper()
	src, exposed, m := exposeModel(tb, qdqmodel.Build(3))
	return exposed, m, src
}

// exposeModel writes model into a temporary directory and exposes it with
// export.Expose (default options); it returns the model's path, the
// exposed directory and its manifest.
func exposeModel(tb testing.TB, model []byte) (src, exposed string, m *export.Manifest) {
	tb.Helper()
	dir := tb.TempDir()
	src = filepath.Join(dir, "model.onnx")
	if err := os.WriteFile(src, model, 0o644); err != nil {
		tb.Fatal(err)
	}
	exposed = filepath.Join(dir, "exposed")
	m, err := export.Expose(context.Background(), src, exposed, export.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	return src, exposed, m
}

// quantAdapter touches density of every quantized weight (float weights
// are left alone) with values in
// the dequantized domain: the base value plus noise of about scale·spread
// (overwrite) or the noise alone (delta).
func quantAdapter(tb testing.TB, m *export.Manifest, dir string, density float64, spread float32, sem adapter.Semantics, seed uint64) *adapter.Adapter {
	tb.Helper()
	em := openExported(tb, dir)
	base, err := em.ReadWeights(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 5))
	a := &adapter.Adapter{Name: "q", DefaultAlpha: 1, Semantics: sem}
	for _, e := range m.Tensors {
		s, err := e.Scheme()
		if err != nil {
			tb.Fatalf("%s: %v", e.Name, err)
		}
		if s == nil {
			continue // a float weight
		}
		n := s.NumElements()
		var ix []uint32
		var vals []float32
		for i := range n {
			if rng.Float64() >= density {
				continue
			}
			step := s.Dequantize(i, 1) - s.Dequantize(i, 0)
			noise := float32(rng.NormFloat64()) * spread * step
			v := noise
			if sem == adapter.Overwrite {
				v += s.Dequantize(i, s.Code(base[e.Name], i))
			}
			ix = append(ix, uint32(i))
			vals = append(vals, v)
		}
		t, err := adapter.NewTensor(e.Name, e.DType, e.LogicalShape(), ix, vals, tensor.Float32)
		if err != nil {
			tb.Fatal(err)
		}
		a.Tensors = append(a.Tensors, t)
	}
	if err := a.Validate(); err != nil {
		tb.Fatal(err)
	}
	return a
}

// TestQuantizedSwitchMatchesFused: on a QDQ model, a live session (and
// the default mode, which falls back from packed to hybrid) patched with
// adapters computes bit for bit what plain ORT computes on the model fused
// offline, with one adapter and with two at fractional alphas, in both
// semantics; Revert gives the base outputs back bit for bit; the survival
// report says how much of the adapters' change the codes kept.
func TestQuantizedSwitchMatchesFused(t *testing.T) {
	requireORT(t)
	dir, m, src := qdqModelDir(t)
	in := map[string]*tensor.Tensor{"x": mustF32(t, []int64{4, qdqmodel.In}, ramp(4*qdqmodel.In, 7))}
	base := mustRun(t, mustOpenModel(t, src, nil), in)
	A := quantAdapter(t, m, dir, 0.05, 6, adapter.Overwrite, 1)
	B := quantAdapter(t, m, dir, 0.05, 3, adapter.Delta, 2)
	steps := []struct {
		name string
		cfgs []patch.Config
	}{
		{"A", []patch.Config{{Adapter: A, Alpha: 1}}},
		{"B", []patch.Config{{Adapter: B, Alpha: 1}}},
		{"A 0.5 + B 0.75", []patch.Config{{Adapter: A, Alpha: 0.5}, {Adapter: B, Alpha: 0.75}}},
		{"B 2", []patch.Config{{Adapter: B, Alpha: 2}}},
	}
	for _, mode := range []Mode{ModeLive, ModeDefault} {
		s := mustOpen(t, dir, &Options{Mode: mode, IntraOpThreads: 1})
		if mode == ModeDefault && s.Mode() == ModePacked {
			t.Fatalf("a quantized model opened packed")
		}
		if got := mustRun(t, s, in); !sameOutputs(got, base) {
			t.Fatalf("%v: the exported model's base outputs differ from the source's", mode)
		}
		for _, st := range steps {
			if err := s.Set(context.Background(), st.cfgs...); err != nil {
				t.Fatalf("%v %s: %v", mode, st.name, err)
			}
			want := fusedOutputs(t, dir, st.cfgs, &Options{IntraOpThreads: 1}, in)
			if got := mustRun(t, s, in); !sameOutputs(got, want) {
				t.Fatalf("%v %s: outputs differ from the offline-fused model's", mode, st.name)
			}
			if sameOutputs(want, base) {
				t.Fatalf("%v %s: the adapter changed nothing", mode, st.name)
			}
		}
		if err := s.Revert(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := mustRun(t, s, in); !sameOutputs(got, base) {
			t.Fatalf("%v: revert did not restore the base outputs bit for bit", mode)
		}
	}
}

// TestFullQDQSwitchMatchesFused: the oracles on a full QDQ model
// (activations quantized too, which ORT fuses into QLinearMatMul): live and
// default-mode sessions patched with an adapter compute bit for bit what
// plain ORT computes on the offline-fused model; revert is bit-exact.
func TestFullQDQSwitchMatchesFused(t *testing.T) {
	requireORT(t)
	src, exposed, m := exposeModel(t, qdqmodel.BuildFullMLP(2, 64, 3))
	if len(m.Tensors) != 3 {
		t.Fatalf("%d weights exposed, want 3 (notes %q)", len(m.Tensors), m.Notes)
	}
	in := map[string]*tensor.Tensor{"x": mustF32(t, []int64{3, 64}, ramp(3*64, 5))}
	base := mustRun(t, mustOpenModel(t, src, nil), in)
	cfg := []patch.Config{{Adapter: quantAdapter(t, m, exposed, 0.1, 8, adapter.Overwrite, 3), Alpha: 1}}
	want := fusedOutputs(t, exposed, cfg, &Options{IntraOpThreads: 1}, in)
	checkModesMatchFused(t, exposed, in, base, want, cfg)
}

// checkModesMatchFused opens live and default-mode sessions of exposed
// and checks, on in: the base outputs (want base, the source model's), the
// outputs with cfg set (want, the offline-fused model's, which must differ
// from base) and after Revert (base again), all bit for bit.
func checkModesMatchFused(t *testing.T, exposed string, in, base, want map[string]*tensor.Tensor, cfg []patch.Config) {
	t.Helper()
	if sameOutputs(want, base) {
		t.Fatal("the adapter changed nothing")
	}
	var liveWeights map[string][]byte
	for _, mode := range []Mode{ModeLive, ModeDefault, ModeBaked} {
		s := mustOpen(t, exposed, &Options{Mode: mode, IntraOpThreads: 1})
		if got := mustRun(t, s, in); !sameOutputs(got, base) {
			t.Fatalf("%v: the exported model's base outputs differ from the source's", mode)
		}
		if err := s.Set(context.Background(), cfg...); err != nil {
			t.Fatal(err)
		}
		if got := mustRun(t, s, in); !sameOutputs(got, want) {
			t.Fatalf("%v: outputs differ from the offline-fused model's", mode)
		}
		// Session.Weight gives the patched codes in every mode (baked
		// fuses them into a copy)
		ws := map[string][]byte{}
		for _, w := range s.Weights() {
			b, err := s.Weight(w.Name)
			if err != nil {
				t.Fatalf("%v: Weight(%s): %v", mode, w.Name, err)
			}
			ws[w.Name] = b
		}
		if liveWeights == nil {
			liveWeights = ws
		}
		for n, b := range ws {
			if !bytes.Equal(b, liveWeights[n]) {
				t.Fatalf("%v: Weight(%s) differs from the live session's", mode, n)
			}
		}
		if err := s.Revert(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := mustRun(t, s, in); !sameOutputs(got, base) {
			t.Fatalf("%v: revert did not restore the base outputs bit for bit", mode)
		}
	}
}

// TestQDQConvTransposeSwitchMatchesFused: quantized weights read by a Conv
// (per output channel) and through a Transpose (which stays in the graph)
// are exposed and patched like the others: live and default-mode sessions
// compute bit for bit what plain ORT computes on the offline-fused model,
// and revert is bit-exact.
func TestQDQConvTransposeSwitchMatchesFused(t *testing.T) {
	requireORT(t)
	src, exposed, m := exposeModel(t, qdqmodel.BuildConvTranspose(6))
	var q int
	for _, e := range m.Tensors {
		if e.Quant != nil {
			q++
		}
	}
	if q != 2 {
		t.Fatalf("%d quantized weights exposed, want 2 (%d tensors; notes %q)", q, len(m.Tensors), m.Notes)
	}
	in := map[string]*tensor.Tensor{"x": mustF32(t, []int64{2, 3, 6, 6}, ramp(2*3*36, 9))}
	base := mustRun(t, mustOpenModel(t, src, nil), in)
	A := quantAdapter(t, m, exposed, 0.2, 6, adapter.Overwrite, 4)
	cfg := []patch.Config{{Adapter: A, Alpha: 1}}
	want := fusedOutputs(t, exposed, cfg, &Options{IntraOpThreads: 1}, in)
	checkModesMatchFused(t, exposed, in, base, want, cfg)
}

// TestNBitsSwitchMatchesFused: on MatMulNBits models (4 and 8 bits, a
// partial last block, with and without zero points), a live and a
// default-mode session patched with adapters compute bit for bit what
// plain ORT computes on the offline-fused model at accuracy_level 0; at
// accuracy_level 4 the baked session does, the live one differs by ORT's
// int8-vs-float32 rounding, and Caveats says so in the modes that serve
// live Runs. Revert is bit-exact.
func TestNBitsSwitchMatchesFused(t *testing.T) {
	requireORT(t)
	for _, c := range []struct {
		k, n, bits, bs, acc int
		zp                  bool
	}{
		{72, 24, 4, 32, 0, true},
		{64, 16, 4, 16, 0, false},
		{64, 16, 8, 32, 0, true},
		{64, 16, 4, 32, 4, true},
	} {
		t.Run(fmt.Sprintf("K%d_N%d_bits%d_bs%d_zp%v_acc%d", c.k, c.n, c.bits, c.bs, c.zp, c.acc), func(t *testing.T) {
			exposed, in, base, A, B := quantFixture(t, qdqmodel.BuildNBits(4, c.k, c.n, c.bits, c.bs, c.zp, c.acc), c.k)
			for _, cfgs := range [][]patch.Config{{{Adapter: A, Alpha: 1}}, {{Adapter: A, Alpha: 0.5}, {Adapter: B, Alpha: 0.75}}} {
				want := fusedOutputs(t, exposed, cfgs, &Options{IntraOpThreads: 1}, in)
				if sameOutputs(want, base) {
					t.Fatal("the adapters changed nothing")
				}
				for _, mode := range []Mode{ModeLive, ModeDefault, ModeBaked} {
					s := mustOpen(t, exposed, &Options{Mode: mode, IntraOpThreads: 1})
					if cv := s.Caveats(); (len(cv) > 0) != (c.acc == 4 && mode != ModeBaked) {
						t.Fatalf("%v: caveats %q", mode, cv)
					}
					if err := s.Set(context.Background(), cfgs...); err != nil {
						t.Fatal(err)
					}
					if err := s.WaitBaked(context.Background()); err != nil && mode != ModeLive {
						t.Fatal(err)
					}
					got := mustRun(t, s, in)
					exact := c.acc == 0 || mode != ModeLive
					if exact && !sameOutputs(got, want) {
						t.Fatalf("%v: outputs differ from the offline-fused model's", mode)
					}
					if !exact && !closeOutputs(got, want, 0.05) {
						t.Fatalf("%v: outputs differ from the offline-fused model's by more than accuracy_level 4 rounding", mode)
					}
					if err := s.Revert(context.Background()); err != nil {
						t.Fatal(err)
					}
					if err := s.WaitBaked(context.Background()); err != nil && mode != ModeLive {
						t.Fatal(err)
					}
					if got := mustRun(t, s, in); exact && !sameOutputs(got, base) {
						t.Fatalf("%v: revert did not restore the base outputs bit for bit", mode)
					}
				}
			}
		})
	}
}

// closeOutputs reports whether every float32 output of a is within tol of
// b's (absolute).
func closeOutputs(a, b map[string]*tensor.Tensor, tol float64) bool {
	for k, v := range a {
		x, err1 := v.AsFloat32()
		y, err2 := b[k].AsFloat32()
		if err1 != nil || err2 != nil || len(x) != len(y) {
			return false
		}
		for i := range x {
			if d := float64(x[i] - y[i]); d > tol || d < -tol {
				return false
			}
		}
	}
	return true
}

// BenchmarkQuantRun is Run on a weight-only QDQ MLP (4 layers of
// 1024×1024 int8 codes, per-channel scales): a plain ORT session of the
// quantized model, a live session (codes fed as overridable initializers:
// DequantizeLinear runs on every Run) and hybrid and baked sessions in
// their steady state after a switch (the rebuilt session with the patched
// codes as constants). SHIRA_BENCH_THREADS sets the intra-op threads
// (default 1); SHIRA_BENCH_QDQ=full quantizes the activations too (ORT then
// runs QLinearMatMul); SHIRA_BENCH_QDQ=nbits0 or nbits4 runs one 4096×4096
// 4-bit MatMulNBits (blocks of 32, zero points) at accuracy_level 0 or 4.
//
//	go test -run '^$' -bench QuantRun -count 5 ./ort/
func BenchmarkQuantRun(b *testing.B) {
	requireORT(b)
	width := 1024
	form := os.Getenv("SHIRA_BENCH_QDQ") // "full": activations quantized too; "nbits0", "nbits4": one 4096² MatMulNBits
	model := qdqmodel.BuildMLP(1, width, 4)
	switch form {
	case "full":
		model = qdqmodel.BuildFullMLP(1, width, 4)
	case "nbits0", "nbits4":
		width = 4096
		model = qdqmodel.BuildNBits(1, width, width, 4, 32, true, int(form[5]-'0'))
	}
	src, exposed, m := exposeModel(b, model)
	A := quantAdapter(b, m, exposed, 0.01, 4, adapter.Overwrite, 1)
	threads := 1
	if v, err := strconv.Atoi(os.Getenv("SHIRA_BENCH_THREADS")); err == nil {
		threads = v
	}
	open := map[string]func() (*Session, error){
		"plain": func() (*Session, error) {
			return OpenModel(context.Background(), src, &Options{IntraOpThreads: threads})
		},
		"live": func() (*Session, error) {
			return Open(context.Background(), exposed, &Options{IntraOpThreads: threads, Mode: ModeLive})
		},
		"hybrid-steady": func() (*Session, error) {
			return Open(context.Background(), exposed, &Options{IntraOpThreads: threads, Mode: ModeHybrid})
		},
		"baked": func() (*Session, error) {
			return Open(context.Background(), exposed, &Options{IntraOpThreads: threads, Mode: ModeBaked})
		},
		"packed": func() (*Session, error) { // hybrid where it does not apply (QDQ forms)
			return Open(context.Background(), exposed, &Options{IntraOpThreads: threads, Mode: ModePacked})
		},
	}
	for _, name := range []string{"plain", "live", "hybrid-steady", "baked", "packed"} {
		s, err := open[name]()
		if err != nil {
			b.Fatal(err)
		}
		if name != "plain" {
			if err := s.Set(context.Background(), patch.Config{Adapter: A, Alpha: 1}); err != nil {
				b.Fatal(err)
			}
			if name == "hybrid-steady" || name == "packed" && s.Mode() != ModePacked {
				if err := s.WaitBaked(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
		}
		label := name
		if name == "packed" && s.Mode() != ModePacked {
			label = "packed-fallback-hybrid-steady"
		}
		for _, batch := range []int{1, 16} {
			in := map[string]*tensor.Tensor{"x": mustF32(b, []int64{int64(batch), int64(width)}, ramp(batch*width, batch))}
			b.Run(fmt.Sprintf("%s/batch=%d", label, batch), func(b *testing.B) {
				mustRun(b, s, in)
				for b.Loop() {
					if _, err := s.Run(context.Background(), in); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		s.Close()
	}
}

// TestPackedNBitsMatchesFused: a 4-bit MatMulNBits weight at float32
// compute (accuracy_level 0 to 3) opens in ModePacked: ORT's prepacked B
// (codes interleaved inside sub-blocks, mlaspack.NBitsLayout) is found by
// content and patched in place, and after every Set the outputs equal
// plain ORT on the offline-fused model bit for bit, with nearest and with
// stochastic rounding; Survival equals the live session's; revert is
// bit-exact. 8-bit weights and accuracy_level 4 fall back to hybrid with a
// reason.
func TestPackedNBitsMatchesFused(t *testing.T) {
	requireORT(t)
	for _, c := range []struct {
		k, n, bits, bs, acc int
		zp                  bool
		packed              bool
	}{
		{72, 24, 4, 32, 0, true, true}, // a partial last block
		{64, 16, 4, 16, 0, false, true},
		{200, 12, 4, 64, 2, true, true},
		{256, 8, 4, 128, 3, false, true},
		{64, 16, 8, 32, 0, true, false},
		{64, 16, 4, 32, 4, true, false},
	} {
		t.Run(fmt.Sprintf("K%d_N%d_bits%d_bs%d_zp%v_acc%d", c.k, c.n, c.bits, c.bs, c.zp, c.acc), func(t *testing.T) {
			exposed, in, base, A, B := quantFixture(t, qdqmodel.BuildNBits(5, c.k, c.n, c.bits, c.bs, c.zp, c.acc), c.k)
			for _, r := range []patch.Rounding{patch.RoundNearestEven, patch.RoundStochastic} {
				s := openPackedOrFallback(t, exposed, r, c.packed)
				if s == nil {
					return
				}
				live := mustOpen(t, exposed, &Options{Mode: ModeLive, IntraOpThreads: 1, Rounding: r})
				for _, cfgs := range [][]patch.Config{{{Adapter: A, Alpha: 1}}, {{Adapter: A, Alpha: 0.5}, {Adapter: B, Alpha: 0.75}}, {{Adapter: B, Alpha: -1}}} {
					want := fusedOutputs(t, exposed, cfgs, &Options{IntraOpThreads: 1}, in, patch.WithRounding(r))
					if sameOutputs(want, base) {
						t.Fatal("the adapters changed nothing")
					}
					for _, x := range []*Session{s, live} {
						if err := x.Set(context.Background(), cfgs...); err != nil {
							t.Fatal(err)
						}
					}
					if got := mustRun(t, s, in); !sameOutputs(got, want) {
						t.Fatalf("%v: packed outputs differ from the offline-fused model's", r)
					}
					if c.acc == 0 && !sameOutputs(mustRun(t, live, in), want) {
						t.Fatalf("%v: live outputs differ from the offline-fused model's", r)
					}
					// the same figures (summed in another order: packed rows)
					if ps, ls := s.Survival(), live.Survival(); len(ps) != 1 || !maps.EqualFunc(ps, ls, sameSurvival) {
						t.Fatalf("%v: packed survival %v, live %v", r, ps, ls)
					}
					// the configuration baked into codes gives the same
					// outputs, packed and live
					baked, err := openExported(t, exposed).Bake(context.Background(), cfgs, "baked", patch.WithRounding(r))
					if err != nil {
						t.Fatal(err)
					}
					for _, x := range []*Session{s, live} {
						want := mustRun(t, x, in)
						if err := x.Set(context.Background(), patch.Default(baked)); err != nil {
							t.Fatal(err)
						}
						if got := mustRun(t, x, in); !sameOutputs(got, want) {
							t.Fatalf("%v, %v: the baked codes compute other outputs than the configuration", r, x.Mode())
						}
					}
				}
				if err := s.Revert(context.Background()); err != nil {
					t.Fatal(err)
				}
				if got := mustRun(t, s, in); !sameOutputs(got, base) {
					t.Fatalf("%v: revert did not restore the base outputs bit for bit", r)
				}
			}
		})
	}
}

// sameSurvival reports whether a and b have the same counts and the same
// sums to rounding.
func sameSurvival(a, b patch.Survival) bool {
	near := func(x, y float64) bool { return math.Abs(x-y) <= 1e-9*math.Max(math.Abs(x), math.Abs(y)) }
	return a.Touched == b.Touched && a.Unchanged == b.Unchanged && a.Clipped == b.Clipped && a.NonFinite == b.NonFinite &&
		near(a.IntendedSq, b.IntendedSq) && near(a.LandedSq, b.LandedSq) && near(a.ErrSq, b.ErrSq) && near(a.Dot, b.Dot)
}

// BenchmarkQuantSwitch is Set alternating between two 1 % adapters on one
// 4096×4096 weight — a float32 MatMul weight (the reference: the same
// indices), a 4-bit MatMulNBits weight (blocks of 32, zero points,
// accuracy_level 0) and a full-QDQ int8 weight per column (QLinearMatMul)
// — in a packed session (ORT's prepacked buffer patched, and for
// QLinearMatMul its column sums updated; translations cached, the default,
// and not cached) and in a live session (the weight ORT reads in place),
// in ms per switch: the switch a packed session adds to a plain session's
// Runs. SHIRA_BENCH_COLD=1 evicts the caches (96 MiB of stores) before
// each switch, as the Runs of a large model would.
func BenchmarkQuantSwitch(b *testing.B) {
	requireORT(b)
	const d = 4096
	cold := os.Getenv("SHIRA_BENCH_COLD") != ""
	var flush []byte
	if cold {
		flush = make([]byte, 96<<20)
	}
	w := make([]float32, d*d)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := range w {
		w[i] = float32(rng.NormFloat64()) / 64
	}
	fp32 := onnxwire.NewBuilder().
		AddInitializer(onnxwire.NewTensor("w", tensor.Float32, []int64{d, d}, tensor.Bytes(w))).
		AddInput("x", tensor.Float32, []int64{-1, d}, "batch").
		AddOutput("y", tensor.Float32, []int64{-1, d}, "batch").
		AddNode("mm", "MatMul", []string{"x", "w"}, []string{"y"}).Bytes()
	for _, m := range []struct {
		name  string
		model []byte
	}{
		{"fp32", fp32},
		{"nbits4", qdqmodel.BuildNBits(1, d, d, 4, 32, true, 0)},
		{"qdq-int8", qdqmodel.BuildFullMatMul(1, d, d, tensor.Int8, 1, false)},
	} {
		_, exposed, em := exposeModel(b, m.model)
		adapterFor := quantAdapter
		if m.name == "fp32" {
			adapterFor = floatAdapter
		}
		cfgs := []patch.Config{
			{Adapter: adapterFor(b, em, exposed, 0.01, 4, adapter.Overwrite, 1), Alpha: 1},
			{Adapter: adapterFor(b, em, exposed, 0.01, 5, adapter.Overwrite, 1), Alpha: 1},
		}
		for _, c := range []struct {
			name string
			opts Options
		}{
			{"packed", Options{Mode: ModePacked}},
			{"packed-uncached", Options{Mode: ModePacked, PackedTranslationCache: -1}},
			{"live", Options{Mode: ModeLive}},
		} {
			s, err := Open(context.Background(), exposed, &c.opts)
			if err != nil {
				b.Fatal(err)
			}
			if c.name != "live" && s.Mode() != ModePacked {
				b.Fatalf("%s/%s: not packed: %s", m.name, c.name, s.FallbackReason())
			}
			b.Run(m.name+"/"+c.name, func(b *testing.B) {
				k := 0
				for b.Loop() {
					if cold {
						b.StopTimer()
						for i := 0; i < len(flush); i += 64 {
							flush[i]++ // ordinary stores: the weight leaves the caches
						}
						b.StartTimer()
					}
					if err := s.Set(context.Background(), cfgs[k]); err != nil {
						b.Fatal(err)
					}
					k = 1 - k
				}
			})
			s.Close()
		}
	}
}

// TestPackedQDQMatchesFused: a full-QDQ model (activations quantized too,
// so ORT runs QLinearMatMul with a prepacked B) opens in ModePacked: the
// prepacked codes (mlaspack.QGemmLayout: column sums, then 16-column
// panels of 4-row groups in slices of 384 rows; uint8 codes with the top
// bit flipped) are found by content and patched in place, their column
// sums recomputed with them, and after every Set the outputs equal plain
// ORT on the offline-fused model bit for bit (nearest and stochastic
// rounding, int8 and uint8 codes, per tensor and per column, with and
// without zero points, K across slices, N not a multiple of 16); revert
// is bit-exact. The weight-only QDQ form (float activations, no
// QLinearMatMul) falls back with a reason.
func TestPackedQDQMatchesFused(t *testing.T) {
	requireORT(t)
	requirePackedPlatform(t)
	type tc struct {
		name   string
		model  []byte
		k      int
		packed bool
	}
	cases := []tc{
		{"int8-percol-K700-N37", qdqmodel.BuildFullMatMul(1, 700, 37, tensor.Int8, 1, false), 700, true},
		// ORT 1.30 packs uint8 weights in another layout (they fall back)
		{"uint8-percol-zp", qdqmodel.BuildFullMatMul(2, 70, 20, tensor.Uint8, 1, true), 70, ortshim.Version() < "1.25"},
		{"uint8-pertensor-zp", qdqmodel.BuildFullMatMul(3, 130, 48, tensor.Uint8, -1, true), 130, ortshim.Version() < "1.25"},
		{"int8-pertensor-zp", qdqmodel.BuildFullMatMul(4, 64, 16, tensor.Int8, -1, true), 64, true},
		{"mlp", qdqmodel.BuildFullMLP(5, 96, 3), 96, true},
		{"shared-weight", qdqmodel.BuildFullSharedMatMul(7, 80, 24), 80, true}, // two QLinearMatMuls read w
		{"weight-only", qdqmodel.BuildMLP(6, 64, 2), 64, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			exposed, in, base, A, B := quantFixture(t, c.model, c.k)
			for _, r := range []patch.Rounding{patch.RoundNearestEven, patch.RoundStochastic} {
				s := openPackedOrFallback(t, exposed, r, c.packed)
				if s == nil {
					return
				}
				changed := false
				for _, cfgs := range [][]patch.Config{{{Adapter: A, Alpha: 1}}, {{Adapter: A, Alpha: 0.5}, {Adapter: B, Alpha: 0.75}}, {{Adapter: B, Alpha: -1}}, nil, {{Adapter: B, Alpha: 1}}} {
					if err := s.Set(context.Background(), cfgs...); err != nil {
						t.Fatal(err)
					}
					want := base
					if len(cfgs) > 0 {
						want = fusedOutputs(t, exposed, cfgs, &Options{IntraOpThreads: 1}, in, patch.WithRounding(r))
						changed = changed || !sameOutputs(want, base) // the quantized output may hide a small change
					}
					if got := mustRun(t, s, in); !sameOutputs(got, want) {
						t.Fatalf("%v, %d adapter(s): packed outputs differ from the offline-fused model's", r, len(cfgs))
					}
				}
				if !changed {
					t.Fatal("no configuration changed the outputs")
				}
				// the configuration baked into codes (export.Model.Bake) gives
				// the same outputs, with either rounding
				cfgs := []patch.Config{{Adapter: A, Alpha: 0.5}, {Adapter: B, Alpha: 0.75}}
				baked, err := openExported(t, exposed).Bake(context.Background(), cfgs, "baked", patch.WithRounding(r))
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Set(context.Background(), cfgs...); err != nil {
					t.Fatal(err)
				}
				want := mustRun(t, s, in)
				if err := s.Set(context.Background(), patch.Default(baked)); err != nil {
					t.Fatal(err)
				}
				if got := mustRun(t, s, in); !sameOutputs(got, want) {
					t.Fatalf("%v: the baked codes compute other outputs than the configuration", r)
				}
				if err := s.Revert(context.Background()); err != nil {
					t.Fatal(err)
				}
				if got := mustRun(t, s, in); !sameOutputs(got, base) {
					t.Fatalf("%v: revert did not restore the base outputs bit for bit", r)
				}
			}
		})
	}
}

// openPackedOrFallback opens exposed in ModePacked with rounding r and
// checks that it runs packed when packed is true, else that it fell back
// with a reason (logged); it returns the packed session, or nil after a
// fallback.
func openPackedOrFallback(t *testing.T, exposed string, r patch.Rounding, packed bool) *Session {
	t.Helper()
	s := mustOpen(t, exposed, &Options{Mode: ModePacked, IntraOpThreads: 1, Rounding: r})
	if got := s.Mode() == ModePacked; got != packed {
		t.Fatalf("%v: mode %v (fallback %q), want packed %v", r, s.Mode(), s.FallbackReason(), packed)
	}
	if !packed {
		if s.FallbackReason() == "" {
			t.Fatal("fell back without a reason")
		}
		t.Logf("fallback: %s", s.FallbackReason())
		return nil
	}
	return s
}

// quantFixture writes model (input "x" [batch, k]), exposes it, and
// returns the exposed directory, an input of 3 rows, the source model's
// outputs for it, and two adapters over its quantized weights (A:
// overwrite, B: delta, 10 % of the entries each).
func quantFixture(t *testing.T, model []byte, k int) (exposed string, in, base map[string]*tensor.Tensor, A, B *adapter.Adapter) {
	t.Helper()
	src, exposed, m := exposeModel(t, model)
	in = map[string]*tensor.Tensor{"x": mustF32(t, []int64{3, int64(k)}, ramp(3*k, 3))}
	base = mustRun(t, mustOpenModel(t, src, &Options{IntraOpThreads: 1}), in)
	A = quantAdapter(t, m, exposed, 0.1, 3, adapter.Overwrite, 1)
	B = quantAdapter(t, m, exposed, 0.1, 2, adapter.Delta, 2)
	return exposed, in, base, A, B
}

// floatAdapter is quantAdapter for the float weights of m: the same
// entries (the same random draws), values the base plus noise of spread
// times 1/256 of the weight's largest magnitude.
func floatAdapter(tb testing.TB, m *export.Manifest, dir string, density float64, spread float32, sem adapter.Semantics, seed uint64) *adapter.Adapter {
	tb.Helper()
	base, err := openExported(tb, dir).ReadWeights(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 5))
	a := &adapter.Adapter{Name: "f", DefaultAlpha: 1, Semantics: sem}
	for _, e := range m.Tensors {
		if e.DType != tensor.Float32 {
			continue
		}
		w := tensor.Float32s(base[e.Name])
		var mx float32
		for _, v := range w {
			mx = max(mx, v, -v)
		}
		var ix []uint32
		var vals []float32
		for i := range w {
			if rng.Float64() >= density {
				continue
			}
			v := float32(rng.NormFloat64()) * spread * mx / 256
			if sem == adapter.Overwrite {
				v += w[i]
			}
			ix = append(ix, uint32(i))
			vals = append(vals, v)
		}
		t, err := adapter.NewTensor(e.Name, e.DType, e.Shape, ix, vals, tensor.Float32)
		if err != nil {
			tb.Fatal(err)
		}
		a.Tensors = append(a.Tensors, t)
	}
	return a
}
