// Package dense adds dense float32 deltas into weights: the add of a LoRA
// fusion (W += scale·B·A), shared by package lora and the LoRA baseline of
// internal/switchbench, so the benchmark measures the library's code. It
// also finds values that are, or become once rounded, NaN or infinite.
package dense

import (
	"fmt"
	"math"

	"github.com/shira-ort/shira-ort/tensor"
)

// block is how many fp16 elements are widened, added and narrowed at a
// time (4 KiB of float32, in L1).
const block = 1024

// Add adds d into the weight w (raw little-endian elements of dt) in
// place: w[i] = round(w[i] + d[i]) with the sum in float32 and rounded to
// nearest even for fp16 and bf16. It fails unless dt is a float dtype and
// w holds len(d) elements.
func Add(w []byte, dt tensor.DType, d []float32) error {
	if len(w) != len(d)*dt.Size() {
		return fmt.Errorf("dense: %d bytes of %v for %d elements", len(w), dt, len(d))
	}
	switch dt {
	case tensor.Float32:
		f := tensor.Float32s(w)
		f = f[:len(d)]
		for i, v := range d {
			f[i] += v
		}
	case tensor.Float16:
		// widen and add a block through the table, then narrow it in one call
		h, tab := tensor.Uint16s(w), tensor.Float16Table()
		var sum [block]float32
		for b0 := 0; b0 < len(d); b0 += block {
			db := d[b0:min(b0+block, len(d))]
			hb, s := h[b0:b0+len(db)], sum[:len(db)]
			for i, v := range db {
				s[i] = tab[hb[i]] + v
			}
			tensor.Float32sToFloat16(hb, s)
		}
	case tensor.BFloat16:
		h := tensor.Uint16s(w)
		h = h[:len(d)]
		for i, v := range d {
			h[i] = tensor.Float32ToBFloat16(tensor.BFloat16ToFloat32(h[i]) + v)
		}
	default:
		return fmt.Errorf("dense: dtype %v is not a float type", dt)
	}
	return nil
}

// NonFinite returns the index of the first value of v that is NaN or
// infinite once rounded to dt (Float32, Float16 or BFloat16; for any other
// dt, as float32), or -1 when every value stays finite.
func NonFinite(v []float32, dt tensor.DType) int {
	for i, x := range v {
		var inf bool
		switch dt {
		case tensor.Float16:
			inf = tensor.Float32ToFloat16(x)&0x7c00 == 0x7c00
		case tensor.BFloat16:
			inf = tensor.Float32ToBFloat16(x)&0x7f80 == 0x7f80
		default:
			inf = math.IsNaN(float64(x)) || math.IsInf(float64(x), 0)
		}
		if inf {
			return i
		}
	}
	return -1
}

// NewNonFinite returns the index of the first element that is NaN or
// infinite in sum but finite in base (both raw little-endian elements of
// the float dtype dt, of the same length), or -1: the elements an Add
// made non-finite.
func NewNonFinite(sum, base []byte, dt tensor.DType) int {
	switch dt {
	case tensor.Float16, tensor.BFloat16:
		mask := uint16(0x7c00)
		if dt == tensor.BFloat16 {
			mask = 0x7f80
		}
		b := tensor.Uint16s(base)
		for i, h := range tensor.Uint16s(sum) {
			if h&mask == mask && b[i]&mask != mask {
				return i
			}
		}
	default:
		b := tensor.Float32s(base)
		for i, f := range tensor.Float32s(sum) {
			if math.Float32bits(f)&0x7f800000 == 0x7f800000 && math.Float32bits(b[i])&0x7f800000 != 0x7f800000 {
				return i
			}
		}
	}
	return -1
}
