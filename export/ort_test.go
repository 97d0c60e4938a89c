package export_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/tensor"
)

// run opens a session with open, runs it on inputs and returns output
// name as float32 values.
func run(t *testing.T, open func() (*ort.Session, error), inputs map[string]*tensor.Tensor, name string) []float32 {
	t.Helper()
	s, err := open()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	outs, err := s.Run(context.Background(), inputs)
	if err != nil {
		t.Fatal(err)
	}
	v, err := outs[name].AsFloat32()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestExposeWeightDeclaredAsDynamicInput: a weight the source model
// already lists in graph.input with symbolic dims (which ONNX Runtime
// accepts) is exported with its real static shape declared, so the export
// opens and computes what the source computes.
func TestExposeWeightDeclaredAsDynamicInput(t *testing.T) {
	orttest.Require(t)
	w := make([]float32, 16)
	for i := range w {
		w[i] = float32(i) - 7.5
	}
	b := onnxwire.NewBuilder()
	b.AddInput("x", tensor.Float32, []int64{-1, 4}, "batch")
	b.AddInput("W", tensor.Float32, []int64{-1, -1}, "rows", "cols")
	b.AddInitializer(onnxwire.NewTensor("W", tensor.Float32, []int64{4, 4}, tensor.Bytes(w)))
	b.AddNode("mm", "MatMul", []string{"x", "W"}, []string{"y"})
	b.AddOutput("y", tensor.Float32, []int64{-1, 4}, "batch")
	dir := t.TempDir()
	src := filepath.Join(dir, "src.onnx")
	if err := b.WriteFile(src); err != nil {
		t.Fatal(err)
	}
	x, err := tensor.FromFloat32([]int64{2, 4}, []float32{1, 2, 3, 4, -1, 0.5, 0.25, 8})
	if err != nil {
		t.Fatal(err)
	}
	in := map[string]*tensor.Tensor{"x": x}
	want := run(t, func() (*ort.Session, error) { return ort.OpenModel(context.Background(), src, nil) }, in, "y")

	out := filepath.Join(dir, "out")
	if _, err := export.Expose(context.Background(), src, out, export.Options{}); err != nil {
		t.Fatal(err)
	}
	got := run(t, func() (*ort.Session, error) { return ort.Open(context.Background(), out, nil) }, in, "y")
	if !slices.Equal(got, want) {
		t.Fatalf("export computes %v, the source %v", got, want)
	}
}
