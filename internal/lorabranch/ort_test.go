package lorabranch

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/lora"
	"github.com/shira-ort/shira-ort/models"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/peft"
	"github.com/shira-ort/shira-ort/tensor"
)

// testOptions are the session options of the tests: one thread, so that
// outputs do not depend on how ORT splits the work.
var testOptions = &ort.Options{IntraOpThreads: 1}

func openData(tb testing.TB, model []byte, opts *ort.Options) *ort.Session {
	tb.Helper()
	s, err := ort.OpenModelData(tb.Context(), model, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func openFile(tb testing.TB, path string, opts *ort.Options) *ort.Session {
	tb.Helper()
	s, err := ort.OpenModel(tb.Context(), path, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// run runs s on in with adapters active and returns the raw bytes of its
// only output.
func run(tb testing.TB, s *ort.Session, in map[string]*tensor.Tensor, adapters ...*ort.LoraAdapter) []byte {
	tb.Helper()
	out, err := s.RunLoRA(context.Background(), in, adapters...)
	if err != nil {
		tb.Fatal(err)
	}
	if len(out) != 1 {
		tb.Fatalf("%d outputs", len(out))
	}
	for _, v := range out {
		return v.Data
	}
	return nil
}

// charlmInput is a [batch, seq] batch of token ids of the charlm model
// (vocabulary of 96).
func charlmInput(tb testing.TB, batch, seq int) map[string]*tensor.Tensor {
	tb.Helper()
	ids := make([]int64, batch*seq)
	for i := range ids {
		ids[i] = int64((i*37 + i/seq*11 + 5) % 96)
	}
	x, err := tensor.FromInt64([]int64{int64(batch), int64(seq)}, ids)
	if err != nil {
		tb.Fatal(err)
	}
	return map[string]*tensor.Tensor{"tokens": x}
}

// tinyInput is a [batch, 16] input of the tiny MLP.
func tinyInput(tb testing.TB, batch int) map[string]*tensor.Tensor {
	tb.Helper()
	v := make([]float32, batch*16)
	for i := range v {
		v[i] = float32(math.Sin(float64(i)*0.7)) * 2
	}
	x, err := tensor.FromFloat32([]int64{int64(batch), 16}, v)
	if err != nil {
		tb.Fatal(err)
	}
	return map[string]*tensor.Tensor{"x": x}
}

// expose exports the model at path into a temporary directory and opens it.
func expose(tb testing.TB, path string) *export.Model {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "exported")
	if _, err := export.Expose(tb.Context(), path, dir, export.Options{}); err != nil {
		tb.Fatal(err)
	}
	m, err := export.Open(dir)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

func loadAdapter(tb testing.TB, ps []Params) *ort.LoraAdapter {
	tb.Helper()
	data, err := Encode(ps)
	if err != nil {
		tb.Fatal(err)
	}
	a, err := ort.NewLoraAdapter(data)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { a.Close() })
	return a
}

// fusedCharlm writes the charlm model with the PEFT LoRA checkpoint of
// style merged by the repository's offline fusion (lora.Fuse, what
// `shira-ort fuse-lora` runs) and returns its path.
func fusedCharlm(tb testing.TB, m *export.Model, style string) string {
	tb.Helper()
	ck, err := peft.Open(modelsPath("charlm", "lora", style))
	if err != nil {
		tb.Fatal(err)
	}
	mods, err := ck.Lora()
	if err != nil {
		tb.Fatal(err)
	}
	res, err := lora.Resolve(mods, m)
	if err != nil {
		tb.Fatal(err)
	}
	e, err := lora.NewEngine(nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer e.Close()
	w, err := m.ReadWeights(tb.Context())
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := lora.Fuse(tb.Context(), e, w, res); err != nil {
		tb.Fatal(err)
	}
	out := filepath.Join(tb.TempDir(), style+".fused.onnx")
	if err := m.WriteStandalone(tb.Context(), w, out); err != nil {
		tb.Fatal(err)
	}
	return out
}

// compare returns the largest absolute difference between a and b (float32
// bytes) and the largest magnitude of b.
func compare(tb testing.TB, a, b []byte) (diff, scale float64) {
	tb.Helper()
	x, y := tensor.Float32s(a), tensor.Float32s(b)
	if len(x) != len(y) {
		tb.Fatalf("%d vs %d values", len(x), len(y))
	}
	for i := range x {
		diff = max(diff, math.Abs(float64(x[i])-float64(y[i])))
		scale = max(scale, math.Abs(float64(y[i])))
	}
	return diff, scale
}

// checkAdapted checks that adapted agrees with fused to float32 rounding
// and differs clearly from base.
func checkAdapted(tb testing.TB, what string, adapted, fused, base []byte) {
	tb.Helper()
	d, scale := compare(tb, adapted, fused)
	moved, _ := compare(tb, base, fused)
	tb.Logf("%s: max |per-run − fused| = %.3g, max |base − fused| = %.3g, output scale %.3g", what, d, moved, scale)
	if d > 1e-4*scale {
		tb.Errorf("%s: per-run LoRA differs from the fused model by %g (output scale %g)", what, d, scale)
	}
	if moved < 1e-2*scale || moved < 100*d {
		tb.Errorf("%s: the adapter barely changes the output (%g, per-run error %g, scale %g)", what, moved, d, scale)
	}
}

// (a) and (b) on the charlm text generator, with its four PEFT LoRA
// checkpoints (r=1 on all 13 linear weights), on the standalone model.
func TestCharlmStandalone(t *testing.T) {
	orttest.Require(t)
	path := modelsPath("charlm", "model.onnx")
	orig := readFile(t, path)
	m := expose(t, path)
	in := charlmInput(t, 2, 48)
	baseSess := openData(t, orig, testOptions)
	base := run(t, baseSess, in)
	var branchSess *ort.Session
	for i, style := range []string{"bofh", "fortunes", "legal", "manpages"} {
		ps, err := FromPeft(modelsPath("charlm", "lora", style), m)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) != 13 {
			t.Fatalf("%s: %d params, want 13", style, len(ps))
		}
		if i == 0 {
			// every checkpoint adapts the same 13 weights: one branch model
			ts := Targets(ps)
			for _, tg := range ts {
				if tg.Rank != 1 {
					t.Fatalf("%s: rank %d", tg.Weight, tg.Rank)
				}
			}
			bm, err := AddBranches(orig, ts)
			if err != nil {
				t.Fatal(err)
			}
			bs, err := Branches(bm)
			if err != nil || len(bs) != 13 {
				t.Fatalf("Branches: %d %v", len(bs), err)
			}
			branchSess = openData(t, bm, testOptions)
			// (a) no adapter: bit for bit the original, with one thread
			// and with ORT's default threads (the same for both models)
			if got := run(t, branchSess, in); !bytes.Equal(got, base) {
				d, _ := compare(t, got, base)
				t.Fatalf("branch model without adapter differs from the original (max %g)", d)
			}
			in16 := charlmInput(t, 16, 64)
			if got, want := run(t, openData(t, bm, nil), in16), run(t, openData(t, orig, nil), in16); !bytes.Equal(got, want) {
				d, _ := compare(t, got, want)
				t.Fatalf("default threads, batch 16: branch model without adapter differs from the original (max %g)", d)
			}
		}
		a := loadAdapter(t, ps)
		// (b) the adapter active for one Run: the fused model, to rounding
		adapted := run(t, branchSess, in, a)
		checkAdapted(t, style, adapted, run(t, openFile(t, fusedCharlm(t, m, style), testOptions), in), base)
		// the next Run without the adapter is the base again
		if !bytes.Equal(run(t, branchSess, in), base) {
			t.Fatalf("%s: a Run after the adapter Run is not the base", style)
		}
	}
}

// (a) and (b) on the exported charlm model: the branch model is written
// beside model.onnx, sharing model.weights, and opened by path.
func TestCharlmExported(t *testing.T) {
	orttest.Require(t)
	m := expose(t, modelsPath("charlm", "model.onnx"))
	src := filepath.Join(m.Dir(), export.ModelFile)
	exported := readFile(t, src)
	ps, err := FromPeft(modelsPath("charlm", "lora", "bofh"), m)
	if err != nil {
		t.Fatal(err)
	}
	bm, err := AddBranches(exported, Targets(ps))
	if err != nil {
		t.Fatal(err)
	}
	bpath := filepath.Join(m.Dir(), "model.lora.onnx")
	if err := os.WriteFile(bpath, bm, 0o644); err != nil {
		t.Fatal(err)
	}
	in := charlmInput(t, 3, 20)
	base := run(t, openFile(t, src, testOptions), in)
	bs := openFile(t, bpath, testOptions)
	if got := run(t, bs, in); !bytes.Equal(got, base) {
		d, _ := compare(t, got, base)
		t.Fatalf("branch model without adapter differs from the exported model (max %g)", d)
	}
	// ort.Open (live) serves the same base
	live, err := ort.Open(t.Context(), m.Dir(), &ort.Options{IntraOpThreads: 1, Mode: ort.ModeLive})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if got := run(t, live, in); !bytes.Equal(got, base) {
		t.Fatal("the live session of the exported directory differs from OpenModel on its model.onnx")
	}
	path := filepath.Join(t.TempDir(), "bofh.onnx_adapter")
	if err := WriteAdapter(path, ps); err != nil {
		t.Fatal(err)
	}
	a, err := ort.LoadLoraAdapter(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	checkAdapted(t, "bofh (exported)", run(t, bs, in, a), run(t, openFile(t, fusedCharlm(t, m, "bofh"), testOptions), in), base)
}

// (a) and (b) on the tiny MLP with synthetic adapters (its Gemm head
// cannot take a branch), at batch 1 and 5; the reference merges A·B into
// the exposed weights (Merge) and writes a standalone model.
func TestTinyRandom(t *testing.T) {
	orttest.Require(t)
	dir := t.TempDir()
	tinyPath := filepath.Join(dir, "tiny.onnx")
	if err := os.WriteFile(tinyPath, models.Tiny, 0o644); err != nil {
		t.Fatal(err)
	}
	m := expose(t, tinyPath)
	cs, err := Candidates(models.Tiny)
	if err != nil {
		t.Fatal(err)
	}
	ts := ForDensity(cs, 0.1) // ranks 1 and 2
	bm, err := AddBranches(models.Tiny, ts)
	if err != nil {
		t.Fatal(err)
	}
	bs, err := Branches(bm)
	if err != nil {
		t.Fatal(err)
	}
	orig := openData(t, models.Tiny, testOptions)
	br := openData(t, bm, testOptions)
	for seed := range uint64(3) {
		ps, err := Random(bs, seed, 0.3)
		if err != nil {
			t.Fatal(err)
		}
		w, err := m.ReadWeights(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := Merge(w, ps); err != nil {
			t.Fatal(err)
		}
		fpath := filepath.Join(dir, fmt.Sprintf("fused%d.onnx", seed))
		if err := m.WriteStandalone(t.Context(), w, fpath); err != nil {
			t.Fatal(err)
		}
		fused := openFile(t, fpath, testOptions)
		a := loadAdapter(t, ps)
		for _, batch := range []int{1, 5} {
			in := tinyInput(t, batch)
			base := run(t, orig, in)
			if got := run(t, br, in); !bytes.Equal(got, base) {
				t.Fatalf("batch %d: branch model without adapter differs from the original", batch)
			}
			checkAdapted(t, fmt.Sprintf("seed %d batch %d", seed, batch), run(t, br, in, a), run(t, fused, in), base)
		}
	}
	// an adapter for weights the model has no branch for is refused by ORT
	other, err := Random([]Branch{{Target{"head.weight", 1}, 8, 32}}, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := br.RunLoRA(t.Context(), tinyInput(t, 1), loadAdapter(t, other)); err == nil {
		t.Fatal("an adapter for a weight without branch was accepted")
	}
}

// (c) per-run selection: two adapters on alternate Runs of one session,
// and the same from concurrent goroutines (with Runs without adapter among
// them), each Run giving exactly the output of its own adapter.
func TestPerRunSelection(t *testing.T) {
	orttest.Require(t)
	path := modelsPath("charlm", "model.onnx")
	orig := readFile(t, path)
	m := expose(t, path)
	styles := []string{"bofh", "legal"}
	var adapters []*ort.LoraAdapter
	var ts []Target
	for _, s := range styles {
		ps, err := FromPeft(modelsPath("charlm", "lora", s), m)
		if err != nil {
			t.Fatal(err)
		}
		ts = Targets(ps)
		adapters = append(adapters, loadAdapter(t, ps))
	}
	bm, err := AddBranches(orig, ts)
	if err != nil {
		t.Fatal(err)
	}
	s := openData(t, bm, testOptions)
	in := charlmInput(t, 1, 32)
	base := run(t, s, in)
	want := make([][]byte, len(adapters))
	for i, a := range adapters {
		want[i] = run(t, s, in, a)
	}
	if bytes.Equal(want[0], want[1]) || bytes.Equal(want[0], base) || bytes.Equal(want[1], base) {
		t.Fatal("the two adapters and the base do not give three different outputs")
	}
	for i := range 6 {
		k := i % 2
		if got := run(t, s, in, adapters[k]); !bytes.Equal(got, want[k]) {
			t.Fatalf("alternate Run %d (%s): output is not that adapter's", i, styles[k])
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for g := range 3 { // g == 2: no adapter
		wg.Go(func() {
			for i := range 15 {
				var as []*ort.LoraAdapter
				exp := base
				if g < 2 {
					as, exp = adapters[g:g+1], want[g]
				}
				out, err := s.RunLoRA(context.Background(), in, as...)
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(out["logits"].Data, exp) {
					errs <- fmt.Errorf("goroutine %d Run %d: output is not its configuration's", g, i)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A standalone model whose weights are external data: the branch model is
// written beside it and refers to the same data file.
func TestExternalData(t *testing.T) {
	orttest.Require(t)
	dir := t.TempDir()
	for _, f := range []string{"model.onnx", "model.onnx.data"} {
		if err := os.WriteFile(filepath.Join(dir, f), readFile(t, modelsPath("testdata", "external", f)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	orig := readFile(t, filepath.Join(dir, "model.onnx"))
	cs, err := Candidates(orig)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 {
		t.Fatalf("candidates %+v", cs)
	}
	bm, err := AddBranches(orig, ForDensity(cs, 0.05))
	if err != nil {
		t.Fatal(err)
	}
	bpath := filepath.Join(dir, "model.lora.onnx")
	if err := os.WriteFile(bpath, bm, 0o644); err != nil {
		t.Fatal(err)
	}
	bs, err := Branches(bm)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := Random(bs, 3, 0.2)
	if err != nil {
		t.Fatal(err)
	}
	v := make([]float32, 2*32)
	for i := range v {
		v[i] = float32(i%7) - 3
	}
	x, _ := tensor.FromFloat32([]int64{2, 32}, v)
	in := map[string]*tensor.Tensor{"x": x}
	base := run(t, openFile(t, filepath.Join(dir, "model.onnx"), testOptions), in)
	s := openFile(t, bpath, testOptions)
	if !bytes.Equal(run(t, s, in), base) {
		t.Fatal("branch model without adapter differs from the original")
	}
	if bytes.Equal(run(t, s, in, loadAdapter(t, ps)), base) {
		t.Fatal("the adapter did not change the output")
	}
}
