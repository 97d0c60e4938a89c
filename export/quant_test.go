package export_test

import (
	"context"
	"fmt"
	"math"
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

// TestExposeNBits: the packed B of a MatMulNBits is exposed as uint8 bytes
// with the block scales and zero points in the manifest (the adapters'
// logical shape is [K, N]), and the exported model computes what the
// source computes: bit for bit at accuracy_level 0; at accuracy_level 4
// ORT computes a constant (prepacked) B in int8 but an overridable one in
// float32, so live mode differs from the source by that rounding, which
// the baked mode (B constant again) does not.
func TestExposeNBits(t *testing.T) {
	for _, c := range []struct {
		k, n, bits, bs, acc int
		zp                  bool
	}{
		{72, 24, 4, 32, 0, true}, // K not a multiple of the block: the last block is partial
		{64, 16, 4, 16, 0, false},
		{64, 16, 8, 32, 0, true},
		{64, 16, 4, 32, 4, true},
	} {
		name := fmt.Sprintf("K%d_N%d_bits%d_bs%d_zp%v_acc%d", c.k, c.n, c.bits, c.bs, c.zp, c.acc)
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "nbits.onnx")
			if err := os.WriteFile(src, qdqmodel.BuildNBits(1, c.k, c.n, c.bits, c.bs, c.zp, c.acc), 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "out")
			m, err := export.Expose(context.Background(), src, out, export.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if len(m.Tensors) != 1 {
				t.Fatalf("%d tensors exposed (notes %q)", len(m.Tensors), m.Notes)
			}
			e := m.Tensors[0]
			blocks := (c.k + c.bs - 1) / c.bs
			if e.DType != tensor.Uint8 || !slices.Equal(e.Shape, []int64{int64(c.n), int64(blocks), int64(c.bs * c.bits / 8)}) ||
				e.Quant == nil || e.Quant.Form != export.QuantNBits || e.Quant.K != c.k || e.Quant.N != c.n ||
				!slices.Equal(e.LogicalShape(), []int64{int64(c.k), int64(c.n)}) || (len(e.Quant.ZeroPoints) > 0) != c.zp {
				t.Fatalf("entry %+v, quant %+v", e, e.Quant)
			}
			if _, err := e.Scheme(); err != nil {
				t.Fatal(err)
			}
			orttest.Require(t)
			xs := make([]float32, 3*c.k)
			for i := range xs {
				xs[i] = float32(i%13)*0.15 - 0.9
			}
			x, _ := tensor.FromFloat32([]int64{3, int64(c.k)}, xs)
			in := map[string]*tensor.Tensor{"x": x}
			want := run(t, func() (*ort.Session, error) { return ort.OpenModel(context.Background(), src, nil) }, in, "y")
			baked := run(t, func() (*ort.Session, error) {
				return ort.Open(context.Background(), out, &ort.Options{Mode: ort.ModeBaked})
			}, in, "y")
			if !slices.Equal(baked, want) {
				t.Fatalf("baked: the export computes %v, the source %v", baked[:4], want[:4])
			}
			live := run(t, func() (*ort.Session, error) {
				return ort.Open(context.Background(), out, &ort.Options{Mode: ort.ModeLive})
			}, in, "y")
			var maxd float64
			for i := range live {
				maxd = max(maxd, math.Abs(float64(live[i]-want[i])))
			}
			t.Logf("live vs source: max |diff| %g", maxd)
			if c.acc == 0 && maxd != 0 {
				t.Fatalf("live: the export computes %v, the source %v", live[:4], want[:4])
			}
		})
	}
}
