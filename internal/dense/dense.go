// Package dense adds dense float32 deltas into weights: the add of a LoRA
// fusion (W += scale·B·A), shared by package lora and the LoRA baseline of
// internal/switchbench, so the benchmark measures the library's code.
package dense

import (
	"fmt"

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
