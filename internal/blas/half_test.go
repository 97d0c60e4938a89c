package blas

import (
	"math"
	"testing"

	"github.com/shira-ort/shira-ort/tensor"
)

// TestHalfMatchesTensor compares the F16C conversions with package
// tensor's on every float16 bit pattern (widen) and on float32 values
// around every float16 (narrow: the value itself, the midpoints to its
// neighbours, and just either side of them), plus overflow, subnormals
// and signed zeros.
func TestHalfMatchesTensor(t *testing.T) {
	t.Logf("F16C: %v", halfOK())
	src := make([]uint16, 1<<16)
	for i := range src {
		src[i] = uint16(i)
	}
	got := make([]float32, len(src))
	WidenFloat16(got, src[:len(src)-3]) // odd length: the scalar tail runs too
	WidenFloat16(got[len(src)-3:], src[len(src)-3:])
	for i, h := range src {
		want := tensor.Float16ToFloat32(h)
		if math.Float32bits(got[i]) != math.Float32bits(want) && !(want != want && got[i] != got[i]) {
			t.Fatalf("widen %#04x: %g, want %g", h, got[i], want)
		}
	}
	var vals []float32
	for h := range 0x7c00 {
		a, b := float64(tensor.Float16ToFloat32(uint16(h))), float64(tensor.Float16ToFloat32(uint16(h+1)))
		m := float32((a + b) / 2)
		for _, v := range []float32{float32(a), m, math.Nextafter32(m, -1), math.Nextafter32(m, 2)} {
			vals = append(vals, v, -v)
		}
	}
	vals = append(vals, 65520, 65519.99, 1e9, float32(math.Inf(1)), float32(math.Inf(-1)), 1e-10, 3e-8, 0)
	out := make([]uint16, len(vals))
	NarrowFloat16(out, vals)
	want := make([]uint16, len(vals))
	tensor.Float32sToFloat16(want, vals)
	for i := range vals {
		if out[i] != want[i] {
			t.Fatalf("narrow %g: %#04x, want %#04x", vals[i], out[i], want[i])
		}
	}
}
