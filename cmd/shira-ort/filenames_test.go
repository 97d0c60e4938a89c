package main

import (
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/internal/npyfile"
	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/tensor"
)

// collidingModel writes and exports (into tmp/exported) a model whose
// inputs "x/in" and "x_in" and outputs "a/b" = x/in·W, "a:b" = -(x/in·W)
// and "a_b" = |x_in| all became the same file names when names were
// sanitised by replacing '/' and ':' with '_'.
func collidingModel(t *testing.T, tmp string) string {
	t.Helper()
	w := make([]float32, 16)
	for i := range w {
		w[i] = float32(i%5) - 2
	}
	b := onnxwire.NewBuilder()
	b.AddInput("x/in", tensor.Float32, []int64{1, 4})
	b.AddInput("x_in", tensor.Float32, []int64{1, 4})
	b.AddInitializer(onnxwire.NewTensor("W", tensor.Float32, []int64{4, 4}, tensor.Bytes(w)))
	b.AddNode("mm", "MatMul", []string{"x/in", "W"}, []string{"a/b"})
	b.AddNode("neg", "Neg", []string{"a/b"}, []string{"a:b"})
	b.AddNode("abs", "Abs", []string{"x_in"}, []string{"a_b"})
	for _, o := range []string{"a/b", "a:b", "a_b"} {
		b.AddOutput(o, tensor.Float32, []int64{1, 4})
	}
	src := filepath.Join(tmp, "collide.onnx")
	if err := b.WriteFile(src); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmp, "exported")
	mustCLI(t, "export", src, "-o", dir)
	return dir
}

// npyFloats reads a float32 .npy file.
func npyFloats(t *testing.T, path string) []float32 {
	t.Helper()
	x, err := npyfile.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := x.AsFloat32()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// npyNames lists the .npy files in dir.
func npyNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".npy") {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestRunOutputNamesDoNotCollide: run --output-dir writes the outputs
// "a/b", "a:b" and "a_b" to three files holding each its own output, and
// the ordinary name "a_b" to a_b.npy as before.
func TestRunOutputNamesDoNotCollide(t *testing.T) {
	orttest.Require(t)
	tmp := t.TempDir()
	dir := collidingModel(t, tmp)
	x1 := []float32{1, -2, 3, -4}
	x2 := []float32{-5, 6, -7, 8}
	for name, v := range map[string][]float32{"x1.npy": x1, "x2.npy": x2} {
		x, err := tensor.FromFloat32([]int64{1, 4}, v)
		if err != nil {
			t.Fatal(err)
		}
		if err := npyfile.WriteFile(filepath.Join(tmp, name), x); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(tmp, "out")
	log := mustCLI(t, "run", "--model", dir, "--input", "x/in="+filepath.Join(tmp, "x1.npy"),
		"--input", "x_in="+filepath.Join(tmp, "x2.npy"), "--output-dir", out)
	files := npyNames(t, out)
	if len(files) != 3 || !slices.Contains(files, "a_b.npy") {
		t.Fatalf("run wrote %v, want three files, one of them a_b.npy\n%s", files, log)
	}
	// each output's file, as the log names it
	got := map[string][]float32{}
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		name, path, ok := strings.Cut(line, " -> ")
		if !ok {
			continue
		}
		name, _, _ = strings.Cut(name, " ")
		got[name] = npyFloats(t, path)
	}
	for i := range 4 {
		var ab float32
		for k := range 4 {
			ab += x1[k] * (float32((k*4+i)%5) - 2)
		}
		if g := got["a/b"]; len(g) != 4 || g[i] != ab {
			t.Fatalf("a/b = %v, want element %d = %v\n%s", g, i, ab, log)
		}
		if g := got["a:b"]; len(g) != 4 || g[i] != -ab {
			t.Fatalf("a:b = %v, want element %d = %v\n%s", g, i, -ab, log)
		}
		if g := got["a_b"]; len(g) != 4 || g[i] != max(x2[i], -x2[i]) {
			t.Fatalf("a_b = %v, want |%v|\n%s", g, x2, log)
		}
	}
}

// TestDeviceTestNamesDoNotCollide: devicetest make writes the inputs
// "x/in" and "x_in" and the references of "a/b", "a:b" and "a_b" to files
// of their own, and the bundle passes devicetest run.
func TestDeviceTestNamesDoNotCollide(t *testing.T) {
	orttest.Require(t)
	tmp := t.TempDir()
	dir := collidingModel(t, tmp)
	a := filepath.Join(tmp, "a.shira")
	mustCLI(t, "create", "--model", dir, "--mask", "rand", "--density", "0.5", "--scale", "0.5", "--seed", "1", "-o", a)
	bundle := filepath.Join(tmp, "bundle")
	mustCLI(t, "devicetest", "make", "--model", dir, "--adapter", a, "-o", bundle)
	if files := npyNames(t, filepath.Join(bundle, "inputs")); len(files) != 2 {
		t.Fatalf("inputs %v, want two files", files)
	}
	for _, c := range []string{"base", "config1"} {
		if files := npyNames(t, filepath.Join(bundle, "ref", c)); len(files) != 3 || !slices.Contains(files, "a_b.npy") {
			t.Fatalf("references of %s: %v, want three files, one of them a_b.npy", c, files)
		}
	}
	if out, err := runCLI(t, "devicetest", "run", bundle, "--runs", "1"); err != nil || !strings.Contains(out, "PASS") {
		t.Fatalf("devicetest run: %v\n%s", err, out)
	}
}

// TestSafeFileName: ordinary names are kept, others escaped one-to-one
// (url.PathUnescape gives the name back).
func TestSafeFileName(t *testing.T) {
	for name, want := range map[string]string{
		"logits": "logits", "a_b": "a_b", "y.0": "y.0", "onnx::Gemm_12": "onnx%3A%3AGemm_12",
		"a/b": "a%2Fb", "a:b": "a%3Ab", "50%": "50%25", "..": "%2E.", `c:\x`: "c%3A%5Cx", "a\nb\x00": "a%0Ab%00", "é?": "é%3F",
	} {
		got := safeFileName(name)
		if got != want {
			t.Errorf("safeFileName(%q) = %q, want %q", name, got, want)
		}
		if back, err := url.PathUnescape(got); err != nil || back != name {
			t.Errorf("url.PathUnescape(%q) = %q, %v; want %q", got, back, err, name)
		}
	}
}
