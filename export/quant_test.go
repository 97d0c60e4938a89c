package export_test

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/internal/qdqmodel"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/tensor"
)

// TestExposeQDQ: the integer codes behind DequantizeLinear are exposed
// with their scales, zero points and axis in the manifest, the exported
// model computes exactly what the source computes, and the manifest's
// schemes dequantize the exposed codes.
func TestExposeQDQ(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "qdq.onnx")
	if err := os.WriteFile(src, qdqmodel.Build(1), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	m, err := export.Expose(context.Background(), src, out, export.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Tensors) != len(qdqmodel.Weights) {
		t.Fatalf("%d tensors exposed, want %d: %+v (notes %q)", len(m.Tensors), len(qdqmodel.Weights), m.Tensors, m.Notes)
	}
	for i, w := range qdqmodel.Weights {
		e := m.Tensors[i]
		if e.Name != w.Name || e.DType != w.Codes || !slices.Equal(e.Shape, w.Shape) || e.Quant == nil {
			t.Fatalf("entry %d: %s %v %v quant %v, want %s %v %v", i, e.Name, e.DType, e.Shape, e.Quant, w.Name, w.Codes, w.Shape)
		}
		q := e.Quant
		wantScales := 1
		if w.Axis >= 0 {
			wantScales = int(w.Shape[w.Axis])
			if q.Axis != w.Axis {
				t.Errorf("%s: axis %d, want %d", w.Name, q.Axis, w.Axis)
			}
		}
		if len(q.Scales) != wantScales || (len(q.ZeroPoints) > 0) != w.ZeroPoint || q.Form != export.QuantQDQ {
			t.Errorf("%s: %d scales (want %d), %d zero points (want some: %v), form %q", w.Name, len(q.Scales), wantScales, len(q.ZeroPoints), w.ZeroPoint, q.Form)
		}
		if _, err := e.Scheme(); err != nil {
			t.Errorf("%s: %v", w.Name, err)
		}
		if len(e.Consumers) != 1 || len(e.Consumers[0].Via) != 1 || e.Consumers[0].Via[0].OpType != "DequantizeLinear" {
			t.Errorf("%s: consumers %+v, want one through DequantizeLinear", w.Name, e.Consumers)
		}
	}
	em, err := export.Open(out)
	if err != nil {
		t.Fatalf("the export does not open: %v", err)
	}
	em.Close()

	orttest.Require(t)
	rng := rand.New(rand.NewPCG(2, 2))
	xs := make([]float32, 5*qdqmodel.In)
	for i := range xs {
		xs[i] = float32(rng.NormFloat64())
	}
	x, err := tensor.FromFloat32([]int64{5, qdqmodel.In}, xs)
	if err != nil {
		t.Fatal(err)
	}
	in := map[string]*tensor.Tensor{"x": x}
	want := run(t, func() (*ort.Session, error) { return ort.OpenModel(context.Background(), src, nil) }, in, "y")
	for _, mode := range []ort.Mode{ort.ModeLive, ort.ModeBaked} {
		got := run(t, func() (*ort.Session, error) { return ort.Open(context.Background(), out, &ort.Options{Mode: mode}) }, in, "y")
		if !slices.Equal(got, want) {
			t.Fatalf("%v: the export computes %v, the source %v", mode, got[:4], want[:4])
		}
	}
}
