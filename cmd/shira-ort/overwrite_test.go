package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/internal/pefttest"
	"github.com/shira-ort/shira-ort/tensor"
)

// snapshot reads every regular file of dir.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range ents {
		if e.Type().IsRegular() {
			out[e.Name()] = readFile(t, filepath.Join(dir, e.Name()))
		}
	}
	return out
}

// sameSnapshot fails unless dir holds exactly the files of before.
func sameSnapshot(t *testing.T, dir string, before map[string][]byte) {
	t.Helper()
	after := snapshot(t, dir)
	if len(after) != len(before) {
		t.Fatalf("%s changed: %d files, was %d", dir, len(after), len(before))
	}
	for n, b := range before {
		if !bytes.Equal(after[n], b) {
			t.Fatalf("%s/%s changed", dir, n)
		}
	}
}

// TestApplyRefusesItsOwnInputs: apply -o onto a file of its --model
// directory (also through a symlinked directory) or onto its adapter is
// refused before anything is written, and the export still runs.
func TestApplyRefusesItsOwnInputs(t *testing.T) {
	orttest.Require(t)
	tmp, _, dir := exportTiny(t)
	a := filepath.Join(tmp, "a.shira")
	mustCLI(t, "create", "--model", dir, "--mask", "rand", "--density", "0.1", "--seed", "1", "-o", a)
	if err := os.Symlink(dir, filepath.Join(tmp, "lnk")); err != nil {
		t.Fatal(err)
	}
	before, adapterBefore := snapshot(t, dir), readFile(t, a)
	for _, out := range []string{
		filepath.Join(dir, "model.onnx"), filepath.Join(dir, "model.weights"), filepath.Join(dir, "manifest.json"),
		filepath.Join(tmp, "lnk", "model.weights"), filepath.Join(dir, ".", "model.onnx"), a,
	} {
		_, err := runCLI(t, "apply", "--model", dir, "--adapter", a, "-o", out)
		if !errors.Is(err, errOverwritesInput) {
			t.Fatalf("apply -o %s: %v", out, err)
		}
		t.Log(err)
	}
	sameSnapshot(t, dir, before)
	if !bytes.Equal(readFile(t, a), adapterBefore) {
		t.Fatal("the adapter changed")
	}
	mustCLI(t, "apply", "--model", dir, "--adapter", a, "-o", filepath.Join(dir, "fused.onnx")) // a new file beside them is fine
	if err := readExported(dir); err != nil {
		t.Fatal(err)
	}
}

// mlpWithExternal writes dir/NAME: y = x·W, W [4, 4] stored in the
// external data file dir/DATA.
func mlpWithExternal(t *testing.T, dir, name, data string) {
	t.Helper()
	w := make([]float32, 16)
	for i := range w {
		w[i] = float32(i) / 8
	}
	if err := os.WriteFile(filepath.Join(dir, data), tensor.Bytes(w), 0o644); err != nil {
		t.Fatal(err)
	}
	W := onnxwire.NewTensor("W", tensor.Float32, []int64{4, 4}, nil)
	W.SetExternal(onnxwire.ExternalData{Location: data, Length: 64})
	b := onnxwire.NewBuilder()
	b.AddInput("x", tensor.Float32, []int64{1, 4})
	b.AddInitializer(W)
	b.AddNode("mm", "MatMul", []string{"x", "W"}, []string{"y"})
	b.AddOutput("y", tensor.Float32, []int64{1, 4})
	if err := b.WriteFile(filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

// TestExportRefusesItsOwnSource: export into the source's own directory
// is refused when it would replace the source model or its external data,
// and nothing is written; without such a clash it works as before.
func TestExportRefusesItsOwnSource(t *testing.T) {
	orttest.Require(t)
	for _, c := range []struct{ name, data string }{{"model.onnx", "w.bin"}, {"src.onnx", "model.weights"}} {
		dir := t.TempDir()
		mlpWithExternal(t, dir, c.name, c.data)
		before := snapshot(t, dir)
		_, err := runCLI(t, "export", filepath.Join(dir, c.name), "-o", dir)
		if !errors.Is(err, export.ErrOverwritesInput) || !strings.Contains(err.Error(), c.name) && !strings.Contains(err.Error(), c.data) {
			t.Fatalf("export %s (data %s) -o its own directory: %v", c.name, c.data, err)
		}
		t.Log(err)
		sameSnapshot(t, dir, before)
	}
	dir := t.TempDir()
	mlpWithExternal(t, dir, "src.onnx", "w.bin")
	mustCLI(t, "export", filepath.Join(dir, "src.onnx"), "-o", dir) // no name clashes
	if err := readExported(dir); err != nil {
		t.Fatal(err)
	}
	mustCLI(t, "export", filepath.Join(dir, "src.onnx"), "-o", dir) // over its own earlier export
}

// TestFuseLoraRefusesItsOwnModel: fuse-lora -o onto its --model
// directory's weight file is refused like apply's.
func TestFuseLoraRefusesItsOwnModel(t *testing.T) {
	orttest.Require(t)
	dir := filepath.Join(t.TempDir(), "base")
	mustCLI(t, "export", pefttest.Path("base.onnx"), "-o", dir)
	before := snapshot(t, dir)
	if _, err := runCLI(t, "fuse-lora", "--lora", pefttest.Path("lora"), "--model", dir, "-o", filepath.Join(dir, "model.weights")); !errors.Is(err, errOverwritesInput) {
		t.Fatalf("fuse-lora -o its model's weight file: %v", err)
	}
	sameSnapshot(t, dir, before)
}
