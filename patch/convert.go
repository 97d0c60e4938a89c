package patch

import (
	"math"
	"sync"

	"github.com/shira-ort/shira-ort/tensor"
)

// Element conversions for the hot loops. They give exactly the bits of
// tensor.Float16ToFloat32 / Float32ToFloat16 / BFloat16ToFloat32 /
// Float32ToBFloat16 (tested exhaustively in convert_test.go) but inline
// and avoid the per-element calls into x448/float16.

// f16Table widens every float16 bit pattern to float32 (256 KiB, built on
// first use from tensor.Float16ToFloat32, so NaN payloads match).
var f16Table = sync.OnceValue(func() *[1 << 16]float32 {
	t := new([1 << 16]float32)
	for i := range t {
		t[i] = tensor.Float16ToFloat32(uint16(i))
	}
	return t
})

// f32to16 rounds f to float16 (nearest even), bit-identical to
// tensor.Float32ToFloat16. It is too big to inline; the hot loop in
// scatter has the same code written out.
func f32to16(f float32) uint16 {
	u := math.Float32bits(f)
	a := u & 0x7fffffff
	if a-0x38800000 < 0x47800000-0x38800000 { // 2^-14 <= |f| < 2^16: normal half (or rounds to Inf)
		r := a - 0x38000000 // rebias the exponent from 127 to 15
		r += 0x0fff + (r>>13)&1
		return uint16(u>>16)&0x8000 | uint16(r>>13)
	}
	return f32to16slow(f) // zero, subnormal, overflow, Inf, NaN
}

// f32to16slow is the rare path of f32to16, kept out of line so that
// f32to16 inlines.
//
//go:noinline
func f32to16slow(f float32) uint16 { return tensor.Float32ToFloat16(f) }

// f32tobf16 is tensor.Float32ToBFloat16 (already inlinable).
func f32tobf16(f float32) uint16 { return tensor.Float32ToBFloat16(f) }

// bf16to32 widens a bfloat16 bit pattern.
func bf16to32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// widen16 converts the 16-bit elements src of dtype dt to float32 into dst
// (len(dst) >= len(src)).
func widen16(dt tensor.DType, dst []float32, src []uint16) {
	dst = dst[:len(src)]
	if dt == tensor.Float16 {
		tab := f16Table()
		for j, h := range src {
			dst[j] = tab[h]
		}
		return
	}
	for j, h := range src {
		dst[j] = bf16to32(h)
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
