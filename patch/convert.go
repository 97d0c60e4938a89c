package patch

import (
	"github.com/shira-ort/shira-ort/tensor"
)

// Widening for the hot loops, through package tensor's conversions (its
// Float16Table for fp16). Narrowing is in kernel.go's scatter, a block at
// a time through tensor.Float32sToFloat16.

// widen16 converts the 16-bit elements src of dtype dt to float32 into dst
// (len(dst) >= len(src)).
func widen16(dt tensor.DType, dst []float32, src []uint16) {
	dst = dst[:len(src)]
	if dt == tensor.Float16 {
		tab := tensor.Float16Table()
		for j, h := range src {
			dst[j] = tab[h]
		}
		return
	}
	for j, h := range src {
		dst[j] = tensor.BFloat16ToFloat32(h)
	}
}

// widenValues converts values[lo:hi] (raw elements of dt) to float32 into
// dst.
func widenValues(dt tensor.DType, dst []float32, values []byte, lo, hi int) {
	if dt == tensor.Float32 {
		copy(dst, tensor.Float32s(values)[lo:hi])
		return
	}
	widen16(dt, dst, tensor.Uint16s(values)[lo:hi])
}
