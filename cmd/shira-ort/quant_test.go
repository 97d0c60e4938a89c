package main

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/npyfile"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/internal/qdqmodel"
	"github.com/shira-ort/shira-ort/tensor"
)

// writeQuantAdapter writes an overwrite adapter for the quantized model
// in dir: 5 % of every weight set to the dequantized base value plus
// noise of spread quantization steps.
func writeQuantAdapter(t *testing.T, dir, path string, spread float32, seed uint64) {
	t.Helper()
	m, err := export.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	base, err := m.ReadWeights(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	a := &adapter.Adapter{Name: "q", DefaultAlpha: 1, Semantics: adapter.Overwrite, ModelFingerprint: m.Manifest().Fingerprint}
	for _, e := range m.Manifest().Tensors {
		s, err := e.Scheme()
		if err != nil || s == nil {
			t.Fatalf("%s: %v %v", e.Name, s, err)
		}
		var ix []uint32
		var vals []float32
		for i := range s.NumElements() {
			if rng.Float64() < 0.05 {
				step := s.Dequantize(i, 1) - s.Dequantize(i, 0)
				ix = append(ix, uint32(i))
				vals = append(vals, s.Dequantize(i, s.Code(base[e.Name], i))+float32(rng.NormFloat64())*spread*step)
			}
		}
		at, err := adapter.NewTensor(e.Name, e.DType, e.Shape, ix, vals, tensor.Float32)
		if err != nil {
			t.Fatal(err)
		}
		a.Tensors = append(a.Tensors, at)
	}
	if err := adapter.Write(path, a); err != nil {
		t.Fatal(err)
	}
}

// TestQuantizedCLI: a QDQ model through the CLI: inspect names its codes
// and scales, run with an adapter equals run on the apply-fused model bit
// for bit, both print what the codes kept of the change, and a threshold
// above it warns.
func TestQuantizedCLI(t *testing.T) {
	orttest.Require(t)
	tmp := t.TempDir()
	src := filepath.Join(tmp, "qdq.onnx")
	if err := os.WriteFile(src, qdqmodel.Build(5), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmp, "exported")
	mustCLI(t, "export", src, "-o", dir)
	if out := mustCLI(t, "inspect", dir); !strings.Contains(out, "int8 codes (qdq per axis 1, no zero point)") ||
		!strings.Contains(out, "uint8 codes (qdq per tensor, zero points)") {
		t.Fatalf("inspect does not describe the quantized weights:\n%s", out)
	}
	a := filepath.Join(tmp, "a.shira")
	writeQuantAdapter(t, dir, a, 4, 1)

	xs := make([]float32, 2*qdqmodel.In)
	for i := range xs {
		xs[i] = float32(i%11)*0.2 - 1
	}
	x, _ := tensor.FromFloat32([]int64{2, qdqmodel.In}, xs)
	xPath := filepath.Join(tmp, "x.npy")
	if err := npyfile.WriteFile(xPath, x); err != nil {
		t.Fatal(err)
	}
	fused := filepath.Join(tmp, "fused.onnx")
	stdout, stderr, err := execCLI(t.Context(), "apply", "--model", dir, "--adapter", a, "-o", fused, "--min-landed", "0.999")
	if err != nil {
		t.Fatalf("apply: %v\n%s", err, stderr)
	}
	t.Logf("apply:\n%s", stdout)
	if !strings.Contains(stdout, "quantized weights: what the codes kept") || !strings.Contains(stdout, "(all)") {
		t.Fatalf("apply does not report survival:\n%s", stdout)
	}
	if !strings.Contains(stderr, "warning: ") {
		t.Fatalf("no warning with --min-landed 0.999:\n%s", stderr)
	}
	run := func(name string, args ...string) ([]byte, string) {
		out := filepath.Join(tmp, name)
		stdout := mustCLI(t, append([]string{"run", "--input", "x=" + xPath, "--output-dir", out}, args...)...)
		y, err := npyfile.ReadFile(filepath.Join(out, "y.npy"))
		if err != nil {
			t.Fatal(err)
		}
		return y.Data, stdout
	}
	live, out := run("live", "--model", dir, "--adapter", a)
	if !strings.Contains(out, "quantized weights: what the codes kept") {
		t.Fatalf("run does not report survival:\n%s", out)
	}
	offline, _ := run("offline", "--model", fused)
	base, _ := run("base", "--model", dir)
	if !bytes.Equal(live, offline) {
		t.Fatal("run with the adapter != run on the apply-fused model")
	}
	if bytes.Equal(live, base) {
		t.Fatal("the adapter changed nothing")
	}
	// inspect --model reports the same survival as apply
	if out := mustCLI(t, "inspect", a, "--model", dir); !strings.Contains(out, "quantized weights: what the codes kept") {
		t.Fatalf("inspect --model does not report survival:\n%s", out)
	}
	// create makes adapters for quantized weights too (values in the
	// dequantized domain), which run and apply alike
	c := filepath.Join(tmp, "c.shira")
	mustCLI(t, "create", "--model", dir, "--mask", "wm", "--density", "0.05", "--scale", "0.05", "--seed", "3", "-o", c)
	fusedC := filepath.Join(tmp, "fused-c.onnx")
	mustCLI(t, "apply", "--model", dir, "--adapter", c+":0.5", "-o", fusedC)
	liveC, _ := run("live-c", "--model", dir, "--adapter", c+":0.5")
	offlineC, _ := run("offline-c", "--model", fusedC)
	if !bytes.Equal(liveC, offlineC) || bytes.Equal(liveC, base) {
		t.Fatal("a created adapter: run != apply-fused run, or no change")
	}
	// --rounding stochastic: run and apply agree with each other and
	// differ from nearest rounding; an unknown rounding is refused
	fusedS := filepath.Join(tmp, "fused-s.onnx")
	mustCLI(t, "apply", "--model", dir, "--adapter", c+":0.5", "-o", fusedS, "--rounding", "stochastic")
	liveS, out := run("live-s", "--model", dir, "--adapter", c+":0.5", "--rounding", "stochastic")
	offlineS, _ := run("offline-s", "--model", fusedS)
	if !bytes.Equal(liveS, offlineS) || bytes.Equal(liveS, liveC) {
		t.Fatalf("stochastic rounding: run != apply-fused run, or the same as nearest:\n%s", out)
	}
	if !strings.Contains(out, "along") {
		t.Fatalf("run does not report the landed change along the intended one:\n%s", out)
	}
	// bake: the stochastically rounded result stored as codes runs alike
	// with the default rounding, in a smaller file, and inspect says codes
	baked := filepath.Join(tmp, "baked.shira")
	if out := mustCLI(t, "bake", "--model", dir, "--adapter", c+":0.5", "-o", baked, "--rounding", "stochastic"); !strings.Contains(out, "of codes") {
		t.Fatalf("bake:\n%s", out)
	}
	liveB, _ := run("live-b", "--model", dir, "--adapter", baked)
	if !bytes.Equal(liveB, liveS) {
		t.Fatal("the baked codes run differently from the configuration they were baked from")
	}
	if sb, sc := fileSize(t, baked), fileSize(t, c); sb >= sc {
		t.Fatalf("the baked adapter (%d bytes) is not smaller than the float one (%d bytes)", sb, sc)
	}
	if out := mustCLI(t, "inspect", baked, "--model", dir); !strings.Contains(out, "int8") || !strings.Contains(out, "100.0%") {
		t.Fatalf("inspect of the baked adapter:\n%s", out)
	}
	if _, stderr, err := execCLI(t.Context(), "apply", "--model", dir, "--adapter", c, "-o", filepath.Join(tmp, "x.onnx"), "--rounding", "up"); err == nil ||
		!strings.Contains(err.Error()+stderr, "nearest or stochastic") {
		t.Fatalf("--rounding up: err %v\n%s", err, stderr)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}
