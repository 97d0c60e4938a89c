package patch

import (
	"github.com/shira-ort/shira-ort/tensor"
)

// Element conversions for the hot loops: package tensor's (its
// Float16Table, and Float32ToFloat16 with its normal range written out in
// the scatter loop of kernel.go, where a call would not inline).

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
