package ort

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/internal/ortshim"
	"github.com/shira-ort/shira-ort/internal/qdqmodel"
	"github.com/shira-ort/shira-ort/internal/testutil"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// packedModelDir exports a model covering every SGEMM layout ORT
// prepacks an exposed weight in:
//
//   - W1 [300, 37]: MatMul B as stored, K spanning two 256-row slices, N
//     not a multiple of 16, on a 3-D input;
//   - W2 [300, 37] read as Gemm B with transB=1 (nn.Linear's layout);
//   - W3 [40, 40] read directly by one MatMul and through a Transpose by
//     another (ORT folds the Transpose: two packed buffers, one per
//     orientation), and by a third MatMul (shared);
//   - W4 [40, 24]: MatMul followed by an Add of a constant bias, which
//     ORT fuses into a Gemm.
func packedModelDir(tb testing.TB) (string, *export.Manifest) {
	tb.Helper()
	return packedModelDirQ(tb, false)
}

// packedModelDirQ is packedModelDir; with nbits, W1 and W4 are 4-bit
// MatMulNBits weights (blocks of 32 and 16, partial last blocks, zero
// points), the others float.
func packedModelDirQ(tb testing.TB, nbits bool) (string, *export.Manifest) {
	tb.Helper()
	rng := rand.New(rand.NewPCG(21, 22))
	f32 := func(n int) []byte {
		v := make([]float32, n)
		for i := range v {
			v[i] = rng.Float32()*2 - 1
		}
		return tensor.Bytes(v)
	}
	b := onnxwire.NewBuilder()
	b.AddInput("X", tensor.Float32, []int64{2, -1, 300}, "", "seq", "")
	b.AddInput("V", tensor.Float32, []int64{-1, 40}, "batch", "")
	b.AddInitializer(onnxwire.NewTensor("W1", tensor.Float32, []int64{300, 37}, f32(300*37)))
	b.AddInitializer(onnxwire.NewTensor("W2", tensor.Float32, []int64{300, 37}, f32(300*37)))
	b.AddInitializer(onnxwire.NewTensor("B2", tensor.Float32, []int64{300}, f32(300)))
	b.AddInitializer(onnxwire.NewTensor("W3", tensor.Float32, []int64{40, 40}, f32(40*40)))
	b.AddInitializer(onnxwire.NewTensor("W4", tensor.Float32, []int64{40, 24}, f32(40*24)))
	b.AddInitializer(onnxwire.NewTensor("B4", tensor.Float32, []int64{24}, f32(24)))
	b.AddInitializer(onnxwire.NewTensor("shape2", tensor.Int64, []int64{2}, tensor.Bytes([]int64{-1, 37})))
	b.AddNode("mm1", "MatMul", []string{"X", "W1"}, []string{"H1"})
	b.AddNode("flat", "Reshape", []string{"H1", "shape2"}, []string{"H1f"})
	b.AddNode("gemm2", "Gemm", []string{"H1f", "W2", "B2"}, []string{"Y"}, onnxwire.IntAttr("transB", 1))
	b.AddNode("tr", "Transpose", []string{"W3"}, []string{"W3T"}, onnxwire.IntsAttr("perm", 1, 0))
	b.AddNode("mm3a", "MatMul", []string{"V", "W3T"}, []string{"Z1"})
	b.AddNode("mm3b", "MatMul", []string{"Z1", "W3"}, []string{"Z2"})
	b.AddNode("mm3c", "MatMul", []string{"Z2", "W3"}, []string{"Z3"})
	b.AddNode("mm4", "MatMul", []string{"Z3", "W4"}, []string{"Z4"})
	b.AddNode("add4", "Add", []string{"Z4", "B4"}, []string{"Z"})
	b.AddOutput("Y", tensor.Float32, []int64{-1, 300}, "n", "")
	b.AddOutput("Z", tensor.Float32, []int64{-1, 24}, "batch", "")
	src := filepath.Join(tb.TempDir(), "packed.onnx")
	model := b.Bytes()
	if nbits {
		var err error
		if model, err = qdqmodel.QuantizeWeightsNBits(model, []string{"W1"}, 4, 32, 0); err != nil {
			tb.Fatal(err)
		}
		if model, err = qdqmodel.QuantizeWeightsNBits(model, []string{"W4"}, 4, 16, 0); err != nil {
			tb.Fatal(err)
		}
	}
	if err := os.WriteFile(src, model, 0o644); err != nil {
		tb.Fatal(err)
	}
	dir := filepath.Join(tb.TempDir(), "packed")
	m, err := export.Expose(context.Background(), src, dir, export.Options{Targets: regexp.MustCompile("^W")})
	if err != nil {
		tb.Fatal(err)
	}
	return dir, m
}

func packedInputs(tb testing.TB, batch, seed int) map[string]*tensor.Tensor {
	return map[string]*tensor.Tensor{
		"X": mustF32(tb, []int64{2, int64(batch), 300}, ramp(2*batch*300, seed)),
		"V": mustF32(tb, []int64{int64(batch), 40}, ramp(batch*40, seed+1)),
	}
}

func requirePackedPlatform(tb testing.TB) {
	tb.Helper()
	if runtime.GOARCH != "amd64" {
		tb.Skip("packed sessions fall back on " + runtime.GOARCH)
	}
}

// TestPackedMatchesFused: a packed session computes exactly (bitwise) what
// a plain ORT session on the offline-fused standalone model computes, for
// every layout of packedModelDir, at batch 1, 3, 16 and 300 and with 1 and 2
// threads, after Set(A), Set(B), Apply(A) and Set(A, B) with alphas, and
// Revert gives the base outputs bitwise.
func TestPackedMatchesFused(t *testing.T) {
	requireORT(t)
	requirePackedPlatform(t)
	dir, m := packedModelDir(t)
	A := patch.Default(randomAdapter(t, m, 0.05, 1))
	B := patch.Default(randomAdapter(t, m, 0.02, 2))
	Bh := patch.Config{Adapter: B.Adapter, Alpha: 0.5}
	for _, threads := range []int{1, 2} {
		t.Run(fmt.Sprintf("threads=%d", threads), func(t *testing.T) {
			s := mustOpen(t, dir, &Options{Mode: ModePacked, IntraOpThreads: threads})
			if s.Mode() != ModePacked || s.FallbackReason() != "" {
				t.Fatalf("mode %v, fallback %q", s.Mode(), s.FallbackReason())
			}
			// one buffer per weight and orientation; W3 is packed both ways
			for name, want := range map[string]int{"W1": 1, "W2": 1, "W3": 2, "W4": 1} {
				if got := len(s.packed.targets[name]); got != want {
					t.Fatalf("%s: %d packed buffers, want %d", name, got, want)
				}
			}
			plain := &Options{IntraOpThreads: threads}
			// batch 300's activations are blocks the tracking allocator
			// caches and hands out again on later Runs
			ins := []map[string]*tensor.Tensor{packedInputs(t, 1, 3), packedInputs(t, 3, 4), packedInputs(t, 16, 5), packedInputs(t, 300, 6)}
			var base []map[string]*tensor.Tensor
			for _, in := range ins {
				got := mustRun(t, s, in)
				if want := fusedOutputs(t, dir, nil, plain, in); !sameOutputs(got, want) {
					t.Fatal("base outputs differ from the standalone model's")
				}
				base = append(base, got)
			}
			for _, step := range []struct {
				name string
				do   func() error
				cfgs []patch.Config
			}{
				{"A", func() error { return s.Set(context.Background(), A) }, []patch.Config{A}},
				{"A->B", func() error { return s.Set(context.Background(), B) }, []patch.Config{B}},
				{"B+A", func() error { return s.Apply(context.Background(), A) }, []patch.Config{B, A}},
				{"A,B/2", func() error { return s.Set(context.Background(), A, Bh) }, []patch.Config{A, Bh}},
			} {
				if err := step.do(); err != nil {
					t.Fatalf("%s: %v", step.name, err)
				}
				for i, in := range ins {
					want := fusedOutputs(t, dir, step.cfgs, plain, in)
					for name := range want {
						if bytes.Equal(want[name].Data, base[i][name].Data) {
							t.Fatalf("%s: adapter does not change output %s", step.name, name)
						}
					}
					if got := mustRun(t, s, in); !sameOutputs(got, want) {
						t.Fatalf("%s, input %d: outputs differ from the offline-fused model", step.name, i)
					}
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
			for i, in := range ins {
				if got := mustRun(t, s, in); !sameOutputs(got, base[i]) {
					t.Fatal("Revert: outputs differ from the base outputs")
				}
			}
		})
	}
}

// TestPackedFallsBack: a model whose exposed weights ORT does not prepack
// as SGEMM weights (a Conv, reordered to NCHWc) opens as a hybrid session
// saying why, and still computes the fused model's outputs.
func TestPackedFallsBack(t *testing.T) {
	requireORT(t)
	dir, m := optModelDir(t)
	s := mustOpen(t, dir, &Options{Mode: ModePacked, IntraOpThreads: 1})
	want := `"Wc"` // the Conv weight
	if runtime.GOARCH != "amd64" {
		want = "x86-64 only"
	}
	if s.Mode() != ModeHybrid || !strings.Contains(s.FallbackReason(), want) {
		t.Fatalf("mode %v, fallback %q; want hybrid, naming %s", s.Mode(), s.FallbackReason(), want)
	}
	A := patch.Default(randomAdapter(t, m, 0.05, 1))
	if err := s.Set(context.Background(), A); err != nil {
		t.Fatal(err)
	}
	waitBaked(t, s)
	in := optInputs(t, 2, 5)
	if got, want := mustRun(t, s, in), fusedOutputs(t, dir, []patch.Config{A}, &Options{IntraOpThreads: 1}, in); !sameOutputs(got, want) {
		t.Fatal("fallen-back session differs from the fused model")
	}
}

// TestPackedSessionsAreToldApart: packed sessions of the same model (equal
// weights, so equal packed buffers) opened concurrently on the one
// environment each find their own buffers: switching one leaves the other
// computing the base model, and closing one leaves the other working.
func TestPackedSessionsAreToldApart(t *testing.T) {
	requireORT(t)
	requirePackedPlatform(t)
	dir, m := packedModelDir(t)
	in := packedInputs(t, 2, 6)
	plain := &Options{IntraOpThreads: 1}
	base := fusedOutputs(t, dir, nil, plain, in)
	A := patch.Default(randomAdapter(t, m, 0.05, 1))
	withA := fusedOutputs(t, dir, []patch.Config{A}, plain, in)

	const n = 4
	sessions := make([]*Session, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() { // open while the others open and Run
			defer wg.Done()
			s, err := Open(context.Background(), dir, &Options{Mode: ModePacked, IntraOpThreads: 1})
			if err != nil {
				errs <- err
				return
			}
			sessions[i] = s
			for range 20 {
				if _, err := s.Run(context.Background(), in); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, s := range sessions {
		t.Cleanup(func() { s.Close() })
		if s.Mode() != ModePacked {
			t.Fatalf("fell back: %s", s.FallbackReason())
		}
	}
	for i, s := range sessions {
		if err := s.Set(context.Background(), A); err != nil {
			t.Fatal(err)
		}
		for j, o := range sessions {
			want := base
			if j <= i {
				want = withA
			}
			if !sameOutputs(mustRun(t, o, in), want) {
				t.Fatalf("after switching sessions 0..%d: session %d computes the wrong configuration", i, j)
			}
		}
	}
	if err := sessions[0].Close(); err != nil {
		t.Fatal(err)
	}
	if err := sessions[1].Revert(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !sameOutputs(mustRun(t, sessions[1], in), base) || !sameOutputs(mustRun(t, sessions[2], in), withA) {
		t.Fatal("after closing session 0, sessions 1 and 2 compute the wrong configurations")
	}
}

// TestPackedHalfWeights: float16 and bfloat16 weights, which ORT converts
// to float32 before packing (a MatMul reading the float16 weight directly,
// and one reading the bfloat16 weight through a Cast), are patched in
// their converted packed form: outputs equal the offline-fused model's
// bitwise after switches with float32, float16 and bfloat16 values, and
// Revert restores the base outputs.
func TestPackedHalfWeights(t *testing.T) {
	requireORT(t)
	requirePackedPlatform(t)
	dir := filepath.Join("testdata", "half")
	s := mustOpen(t, dir, &Options{Mode: ModePacked, IntraOpThreads: 1})
	if s.Mode() != ModePacked {
		t.Fatalf("fell back: %s", s.FallbackReason())
	}
	for name, tg := range s.packed.targets {
		if len(tg) != 1 || !tg[0].widened {
			t.Fatalf("%s: targets %+v, want one widened buffer", name, tg)
		}
	}
	m := openExported(t, dir).Manifest()
	in := halfInputs(t)
	plain := &Options{IntraOpThreads: 1}
	base := mustRun(t, s, in)
	if want := fusedOutputs(t, dir, nil, plain, in); !sameOutputs(base, want) {
		t.Fatal("base outputs differ from the standalone model's")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for k, vdt := range []tensor.DType{tensor.Float32, tensor.Float16, tensor.BFloat16} {
		a := &adapter.Adapter{Name: fmt.Sprint("half", k), DefaultAlpha: 1, Semantics: adapter.Semantics(k % 2)}
		for _, e := range m.Tensors {
			n, _ := tensor.NumElements(e.Shape)
			var ix []uint32
			var vals []float32
			for i := range n {
				if rng.IntN(3) == 0 {
					ix = append(ix, uint32(i))
					vals = append(vals, rng.Float32()*4-2)
				}
			}
			at, err := adapter.NewTensor(e.Name, e.DType, e.Shape, ix, vals, vdt)
			if err != nil {
				t.Fatal(err)
			}
			a.Tensors = append(a.Tensors, at)
		}
		for _, cfgs := range [][]patch.Config{{patch.Default(a)}, {{Adapter: a, Alpha: 0.3}}} {
			if err := s.Set(context.Background(), cfgs...); err != nil {
				t.Fatal(err)
			}
			want := fusedOutputs(t, dir, cfgs, plain, in)
			got := mustRun(t, s, in)
			for name := range want {
				if bytes.Equal(want[name].Data, base[name].Data) {
					t.Fatalf("%v values: the adapter does not change %s", vdt, name)
				}
			}
			if !sameOutputs(got, want) {
				t.Fatalf("%v values, alpha %v: outputs differ from the offline-fused model", vdt, cfgs[0].Alpha)
			}
		}
	}
	if err := s.Revert(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !sameOutputs(mustRun(t, s, in), base) {
		t.Fatal("Revert: outputs differ from the base outputs")
	}
}

// halfInputs feeds testdata/half: X float16 and XB bfloat16, [3, 8].
func halfInputs(tb testing.TB) map[string]*tensor.Tensor {
	tb.Helper()
	x, xb := make([]uint16, 24), make([]uint16, 24)
	for i := range x {
		x[i] = tensor.Float32ToFloat16(float32(i%7) - 3)
		xb[i] = tensor.Float32ToBFloat16(float32(i%5) - 2)
	}
	X, err := tensor.New(tensor.Float16, []int64{3, 8}, tensor.Bytes(x))
	if err != nil {
		tb.Fatal(err)
	}
	XB, err := tensor.New(tensor.BFloat16, []int64{3, 8}, tensor.Bytes(xb))
	if err != nil {
		tb.Fatal(err)
	}
	return map[string]*tensor.Tensor{"X": X, "XB": XB}
}

// TestPackedUnknownVersion: a library version whose packed layout was not
// checked falls back to hybrid, naming the version.
func TestPackedUnknownVersion(t *testing.T) {
	requireORT(t)
	requirePackedPlatform(t)
	testutil.Replace(t, &packedVersions, []string{"0.1"})
	dir, _ := packedModelDir(t)
	s := mustOpen(t, dir, &Options{Mode: ModePacked})
	if s.Mode() != ModeHybrid || !strings.Contains(s.FallbackReason(), Version()) || !strings.Contains(s.FallbackReason(), "0.1") {
		t.Fatalf("mode %v, fallback %q", s.Mode(), s.FallbackReason())
	}
}

// TestPackedWithProviderFallback: a requested execution provider the
// library lacks falls back to CPU (Options.ProviderFallback), and the CPU
// session is packed.
func TestPackedWithProviderFallback(t *testing.T) {
	requireORT(t)
	requirePackedPlatform(t)
	dir, m := packedModelDir(t)
	p, err := ParseProvider("qnn")
	if err != nil {
		t.Fatal(err)
	}
	s := mustOpen(t, dir, &Options{Mode: ModePacked, Providers: []Provider{p}, ProviderFallback: true, IntraOpThreads: 1})
	if s.Mode() != ModePacked {
		t.Fatalf("fell back: %s", s.FallbackReason())
	}
	st := s.Providers()
	if len(st) == 0 || st[0].Active {
		t.Skipf("this ORT build has the QNN provider: %+v", st)
	}
	A := patch.Default(randomAdapter(t, m, 0.05, 1))
	if err := s.Set(context.Background(), A); err != nil {
		t.Fatal(err)
	}
	in := packedInputs(t, 2, 3)
	if !sameOutputs(mustRun(t, s, in), fusedOutputs(t, dir, []patch.Config{A}, &Options{IntraOpThreads: 1}, in)) {
		t.Fatal("outputs differ from the offline-fused model")
	}
}

// TestPackedRunBlocksAreCached: the tracking allocator, which replaces
// ORT's arena for a packed session, keeps the blocks Runs free for the
// next Runs (outputs stay exact: TestPackedMatchesFused runs batch 300
// through reused blocks), and a closed session's cached blocks go back to
// the C heap.
func TestPackedRunBlocksAreCached(t *testing.T) {
	requireORT(t)
	requirePackedPlatform(t)
	dir, _ := packedModelDir(t)
	s := mustOpen(t, dir, &Options{Mode: ModePacked, IntraOpThreads: 1})
	if s.Mode() != ModePacked {
		t.Fatalf("fell back: %s", s.FallbackReason())
	}
	in := packedInputs(t, 300, 1)
	first := mustRun(t, s, in)
	for range 3 {
		if got := mustRun(t, s, in); !sameOutputs(got, first) {
			t.Fatal("a Run through cached blocks differs from the first")
		}
	}
	if n := ortshim.AllocatorCacheBytes(); n == 0 {
		t.Error("no block of a batch-300 Run was kept for reuse")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := ortshim.AllocatorCacheBytes(); n != 0 {
		t.Errorf("%d bytes still cached after the session closed", n)
	}
}

// TestPackedTranslationCache: with Options.PackedTranslationCache a packed
// session translates an adapter once and reuses the translation when it
// switches back (outputs still bitwise the offline-fused model's), keeps
// within its budget (least recently used out), keeps a cached adapter
// retained when its owner closes it, and lets go of everything at Close.
func TestPackedTranslationCache(t *testing.T) {
	requireORT(t)
	requirePackedPlatform(t)
	dir, m := packedModelDir(t)
	A := patch.Default(randomAdapter(t, m, 0.05, 1))
	B := patch.Default(randomAdapter(t, m, 0.05, 2))
	C := patch.Default(randomAdapter(t, m, 0.05, 3))
	var per int64
	for _, tt := range A.Adapter.Tensors {
		bufs := map[string]int64{"W1": 1, "W2": 1, "W3": 2, "W4": 1}[tt.Name]
		per += int64(len(tt.Indices)) * int64(4+tt.ValueDType.Size()) * bufs
	}
	// Room for about two adapters' translations.
	s := mustOpen(t, dir, &Options{Mode: ModePacked, IntraOpThreads: 1, PackedTranslationCache: per*2 + per/2})
	if s.Mode() != ModePacked {
		t.Fatalf("fell back: %s", s.FallbackReason())
	}
	in := packedInputs(t, 3, 7)
	plain := &Options{IntraOpThreads: 1}
	check := func(step string, cfg patch.Config) {
		t.Helper()
		if err := s.Set(context.Background(), cfg); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if got, want := mustRun(t, s, in), fusedOutputs(t, dir, []patch.Config{cfg}, plain, in); !sameOutputs(got, want) {
			t.Fatalf("%s: outputs differ from the offline-fused model", step)
		}
	}
	c := &s.packed.cache
	check("A", A)
	check("B", B)
	misses := c.misses
	check("A again", A)
	if c.misses != misses || c.hits == 0 {
		t.Fatalf("switching back to A translated again (hits %d, misses %d -> %d)", c.hits, misses, c.misses)
	}
	if c.bytes > c.budget {
		t.Fatalf("cache holds %d bytes, budget %d", c.bytes, c.budget)
	}
	cached := func(a *adapter.Adapter) (n int) {
		for k := range c.entries {
			for i := range a.Tensors {
				if k.t == &a.Tensors[i] {
					n++
				}
			}
		}
		return n
	}
	nA, nB := cached(A.Adapter), cached(B.Adapter)
	check("C", C) // makes room by evicting B's translations, the least recently used
	if cached(A.Adapter) != nA || cached(B.Adapter) >= nB || c.bytes > c.budget {
		t.Fatalf("after C: A has %d of %d translations cached, B %d of %d; %d bytes of %d",
			cached(A.Adapter), nA, cached(B.Adapter), nB, c.bytes, c.budget)
	}
	// A cached adapter closed by its owner stays usable to the session.
	if err := A.Adapter.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Revert(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if c.lru.Len() != 0 || c.bytes != 0 {
		t.Fatalf("%d translations (%d bytes) still cached after Close", c.lru.Len(), c.bytes)
	}
}

// TestPackedTranslationCacheDefault: a packed session caches translations
// by default (DefaultPackedTranslationCache) and keeps none with a
// negative budget.
func TestPackedTranslationCacheDefault(t *testing.T) {
	requireORT(t)
	requirePackedPlatform(t)
	dir, m := packedModelDir(t)
	A := patch.Default(randomAdapter(t, m, 0.05, 1))
	B := patch.Default(randomAdapter(t, m, 0.05, 2))
	for _, c := range []struct {
		opt    int64
		budget int64
	}{{0, DefaultPackedTranslationCache}, {-1, 0}} {
		s := mustOpen(t, dir, &Options{Mode: ModePacked, IntraOpThreads: 1, PackedTranslationCache: c.opt})
		if s.Mode() != ModePacked {
			t.Fatalf("fell back: %s", s.FallbackReason())
		}
		for _, cfg := range []patch.Config{A, B, A} {
			if err := s.Set(context.Background(), cfg); err != nil {
				t.Fatal(err)
			}
		}
		tc := &s.packed.cache
		if tc.budget != c.budget || (c.budget > 0) != (tc.hits > 0) || (c.budget == 0 && tc.bytes != 0) {
			t.Fatalf("option %d: budget %d (want %d), %d hits, %d bytes cached", c.opt, tc.budget, c.budget, tc.hits, tc.bytes)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
