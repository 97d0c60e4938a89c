package ort

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/export"

	"github.com/shira-ort/shira-ort/tensor"
)

var allBindings = []WeightBinding{AddInitializer, FeedEachRun}
var allLevels = []OptimizationLevel{OptimizeDisable, OptimizeBasic, OptimizeExtended, OptimizeAll}

func mlpInput(t testing.TB, batch int, seed int) map[string]*tensor.Tensor {
	return map[string]*tensor.Tensor{"X": mustF32(t, []int64{int64(batch), 8}, ramp(batch*8, seed))}
}

func TestIOInfo(t *testing.T) {
	requireORT(t)
	s := mustOpen(t, testdata("mlp"), &Options{Mode: ModeLive})
	in, out := s.Inputs(), s.Outputs()
	if len(in) != 1 || in[0].Name != "X" || in[0].DType != tensor.Float32 || !slices.Equal(in[0].Shape, []int64{-1, 8}) || in[0].SymbolicDims[0] != "batch" {
		t.Fatalf("inputs = %+v (the exposed weights must not be listed)", in)
	}
	if len(out) != 1 || out[0].Name != "Y" || !slices.Equal(out[0].Shape, []int64{-1, 4}) {
		t.Fatalf("outputs = %+v", out)
	}
	ws := s.Weights()
	if len(ws) != 2 || ws[0].Name != "W1" || ws[1].Name != "W2" || ws[1].Offset%4096 != 0 {
		t.Fatalf("weights = %+v", ws)
	}
	if _, err := s.Weight("b"); weightBytes(t, s, "W1") == nil || !errors.Is(err, ErrUnknownWeight) {
		t.Fatal("Weight lookup wrong")
	}
}

// TestExportedMatchesPlain: the exported model with its own weights computes
// what the plain constant model computes.
func TestExportedMatchesPlain(t *testing.T) {
	requireORT(t)
	plain := mustOpenModel(t, testdata("mlp_plain.onnx"), nil)
	want := mustRun(t, plain, mlpInput(t, 3, 2))["Y"]
	for _, b := range allBindings {
		for _, l := range allLevels {
			s := mustOpen(t, testdata("mlp"), &Options{Mode: ModeLive, WeightBinding: b, OptimizationLevel: l})
			got := mustRun(t, s, mlpInput(t, 3, 2))["Y"]
			assertClose(t, b.String()+"/"+l.String(), tensor.Float32s(got.Data), tensor.Float32s(want.Data), 1e-5)
		}
	}
}

// TestWriteIsSeenByNextRun: an in-place write into a mapped weight changes
// the next Run's output; restoring it restores the output bit for bit. For
// both bindings and every optimization level.
func TestWriteIsSeenByNextRun(t *testing.T) {
	requireORT(t)
	for _, b := range allBindings {
		for _, l := range allLevels {
			t.Run(b.String()+"/"+l.String(), func(t *testing.T) {
				s := mustOpen(t, testdata("mlp"), &Options{Mode: ModeLive, WeightBinding: b, OptimizationLevel: l})
				in := mlpInput(t, 4, 3)
				base := mustRun(t, s, in)["Y"]
				for _, name := range []string{"W1", "W2"} {
					w := tensor.Float32s(liveWeight(s, name))
					orig := append([]float32(nil), w...)
					for i := range w {
						w[i] += 0.5
					}
					changed := mustRun(t, s, in)["Y"]
					if bytes.Equal(changed.Data, base.Data) {
						t.Fatalf("writing %s did not change the output", name)
					}
					copy(w, orig)
					again := mustRun(t, s, in)["Y"]
					if !bytes.Equal(again.Data, base.Data) {
						t.Fatalf("restoring %s did not restore the output bitwise", name)
					}
				}
			})
		}
	}
}

// TestBindingsAgree: AddInitializer and FeedEachRun give identical outputs,
// before and after a write.
func TestBindingsAgree(t *testing.T) {
	requireORT(t)
	a := mustOpen(t, testdata("mlp"), &Options{Mode: ModeLive, WeightBinding: AddInitializer})
	f := mustOpen(t, testdata("mlp"), &Options{Mode: ModeLive, WeightBinding: FeedEachRun})
	for round := range 2 {
		for batch := 1; batch <= 5; batch += 2 {
			in := mlpInput(t, batch, batch)
			ya, yf := mustRun(t, a, in)["Y"], mustRun(t, f, in)["Y"]
			if !bytes.Equal(ya.Data, yf.Data) || !slices.Equal(ya.Shape, yf.Shape) {
				t.Fatalf("round %d batch %d: outputs differ", round, batch)
			}
		}
		for _, s := range []*Session{a, f} {
			tensor.Float32s(liveWeight(s, "W2"))[5] = 3
		}
	}
}

// TestMappingIsPrivate: writes never reach model.weights.
func TestMappingIsPrivate(t *testing.T) {
	requireORT(t)
	dir := copyDir(t, testdata("mlp"))
	before, err := os.ReadFile(filepath.Join(dir, "model.weights"))
	if err != nil {
		t.Fatal(err)
	}
	s := mustOpen(t, dir, nil)
	tensor.Float32s(liveWeight(s, "W1"))[0] = 42
	mustRun(t, s, mlpInput(t, 1, 1))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "model.weights"))
	if !bytes.Equal(before, after) {
		t.Fatal("a write into the session's weights reached the file")
	}
}

func TestHalfAndBFloat16(t *testing.T) {
	requireORT(t)
	for _, b := range allBindings {
		s := mustOpen(t, testdata("half"), &Options{Mode: ModeLive, WeightBinding: b})
		const n = 3
		xv := ramp(n*8, 5)
		x16 := make([]uint16, len(xv))
		xb := make([]uint16, len(xv))
		for i, v := range xv {
			x16[i] = tensor.Float32ToFloat16(v)
			xb[i] = tensor.Float32ToBFloat16(v)
		}
		X, _ := tensor.New(tensor.Float16, []int64{n, 8}, tensor.Bytes(x16))
		XB, _ := tensor.New(tensor.BFloat16, []int64{n, 8}, tensor.Bytes(xb))
		in := map[string]*tensor.Tensor{"X": X, "XB": XB}
		out := mustRun(t, s, in)
		y, yb := out["Y"], out["YB"]
		if y.DType != tensor.Float16 || yb.DType != tensor.BFloat16 || !slices.Equal(y.Shape, []int64{n, 4}) || !slices.Equal(yb.Shape, []int64{n, 4}) {
			t.Fatalf("outputs %v %v / %v %v", y.DType, y.Shape, yb.DType, yb.Shape)
		}
		check := func(what string, x *tensor.Tensor, wname string, got *tensor.Tensor, tol float64) {
			t.Helper()
			xf, _ := x.AsFloat32()
			wt, _ := tensor.New(s.byName[wname].info.DType, []int64{8, 4}, weightBytes(t, s, wname))
			wf, _ := wt.AsFloat32()
			gf, _ := got.AsFloat32()
			assertClose(t, b.String()+" "+what, gf, matmul(xf, wf, n, 8, 4), tol)
		}
		check("Y", X, "Wh", y, 4e-3)
		check("YB", XB, "Wb", yb, 2e-2)

		// Patch visibility for 16-bit weights.
		for _, name := range []string{"Wh", "Wb"} {
			w := tensor.Uint16s(liveWeight(s, name))
			old := w[0]
			w[0] ^= 0x8000 // flip the sign
			out2 := mustRun(t, s, in)
			if bytes.Equal(out2["Y"].Data, y.Data) && bytes.Equal(out2["YB"].Data, yb.Data) {
				t.Fatalf("%s: writing %s changed nothing", b, name)
			}
			w[0] = old
			out3 := mustRun(t, s, in)
			if !bytes.Equal(out3["Y"].Data, y.Data) || !bytes.Equal(out3["YB"].Data, yb.Data) {
				t.Fatalf("%s: restoring %s did not restore the outputs", b, name)
			}
		}
	}
}

func TestInt64InputAndOutput(t *testing.T) {
	requireORT(t)
	s := mustOpen(t, testdata("ids"), &Options{Mode: ModeLive})
	ids := []int64{3, 0, 9, 3, 7}
	in, _ := tensor.FromInt64([]int64{int64(len(ids))}, ids)
	out := mustRun(t, s, map[string]*tensor.Tensor{"ids": in})
	next := out["next"]
	if next.DType != tensor.Int64 || !slices.Equal(next.Shape, []int64{5}) {
		t.Fatalf("next: %v %v", next.DType, next.Shape)
	}
	for i, v := range tensor.Int64s(next.Data) {
		if v != ids[i]+1 {
			t.Fatalf("next[%d] = %d, want %d", i, v, ids[i]+1)
		}
	}
	e, w := weightF32(t, s, "E"), weightF32(t, s, "W")
	emb := make([]float32, 0, len(ids)*8)
	for _, id := range ids {
		emb = append(emb, e[id*8:id*8+8]...)
	}
	assertClose(t, "Y", tensor.Float32s(out["Y"].Data), matmul(emb, w, len(ids), 8, 4), 1e-5)

	// A patched embedding row is read by the next Run.
	tensor.Float32s(liveWeight(s, "E"))[9*8] += 1
	y2 := mustRun(t, s, map[string]*tensor.Tensor{"ids": in})["Y"]
	if bytes.Equal(y2.Data, out["Y"].Data) {
		t.Fatal("patching E changed nothing")
	}
}

func TestRunValidation(t *testing.T) {
	requireORT(t)
	s := mustOpen(t, testdata("mlp"), &Options{Mode: ModeLive})
	good := mustF32(t, []int64{2, 8}, ramp(16, 0))
	cases := []struct {
		name string
		in   map[string]*tensor.Tensor
		want string
	}{
		{"missing", map[string]*tensor.Tensor{}, `missing input "X"`},
		{"nil", map[string]*tensor.Tensor{"X": nil}, `missing input "X"`},
		{"unknown", map[string]*tensor.Tensor{"X": good, "Z": good}, `unknown input "Z"`},
		{"weight", map[string]*tensor.Tensor{"X": good, "W1": good}, `"W1" is an exposed weight`},
		{"dtype", map[string]*tensor.Tensor{"X": {DType: tensor.Float16, Shape: []int64{2, 8}, Data: make([]byte, 32)}}, "got float16, model wants float32"},
		{"rank", map[string]*tensor.Tensor{"X": mustF32(t, []int64{16}, ramp(16, 0))}, "got rank 1"},
		{"dim", map[string]*tensor.Tensor{"X": mustF32(t, []int64{4, 4}, ramp(16, 0))}, "model wants [batch 8]"},
		{"bytes", map[string]*tensor.Tensor{"X": {DType: tensor.Float32, Shape: []int64{2, 8}, Data: make([]byte, 60)}}, "needs 64 bytes, has 60"},
	}
	for _, c := range cases {
		_, err := s.Run(context.Background(), c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to contain %q", c.name, err, c.want)
		}
	}
}

func TestCloseIdempotent(t *testing.T) {
	requireORT(t)
	s, err := Open(context.Background(), testdata("mlp"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Run(context.Background(), mlpInput(t, 1, 0)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Close: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	requireORT(t)
	t.Run("not overridable", func(t *testing.T) {
		dir := copyDir(t, testdata("mlp"))
		plain, _ := os.ReadFile(testdata("mlp_plain.onnx"))
		os.WriteFile(filepath.Join(dir, export.ModelFile), plain, 0o644)
		_, err := Open(context.Background(), dir, nil)
		if err == nil || !strings.Contains(err.Error(), "overridable initializer") {
			t.Fatalf("err = %v", err)
		}
	})
	edit := func(t *testing.T, from, to string) error {
		dir := copyDir(t, testdata("mlp"))
		p := filepath.Join(dir, export.ManifestFile)
		b, _ := os.ReadFile(p)
		if !bytes.Contains(b, []byte(from)) {
			t.Fatalf("manifest has no %q", from)
		}
		os.WriteFile(p, bytes.Replace(b, []byte(from), []byte(to), 1), 0o644)
		_, err := Open(context.Background(), dir, &Options{VerifyWeights: true})
		return err
	}
	for _, c := range []struct{ name, from, to, want string }{
		{"out of file", `"offset": 4096`, `"offset": 8192`, "beyond the end"},
		{"length", `"length": 256`, `"length": 252`, "length 252 does not match"},
		{"dtype", `"dtype": "float32"`, `"dtype": "complex"`, "unknown dtype"},
		{"checksum", `"sha256": "7c`, `"sha256": "8c`, "fingerprint"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := edit(t, c.from, c.to); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
	if _, err := Open(context.Background(), t.TempDir(), nil); err == nil || !strings.Contains(err.Error(), export.ManifestFile) {
		t.Fatalf("empty dir: %v", err)
	}
}

func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}
