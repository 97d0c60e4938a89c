package blas

// #include "blas.h"
import "C"

import (
	"sync"
	"unsafe"

	"github.com/shira-ort/shira-ort/tensor"
)

var halfOK = sync.OnceValue(func() bool { return C.shira_half_supported() != 0 })

// WidenFloat16 converts the float16 bit patterns src to float32 in dst
// (which must be at least as long), exactly: with the CPU's F16C
// instructions where it has them (x86-64), else through package tensor.
func WidenFloat16(dst []float32, src []uint16) {
	if len(dst) < len(src) {
		panic("blas: WidenFloat16: dst shorter than src")
	}
	if len(src) == 0 {
		return
	}
	if halfOK() {
		C.shira_half_widen((*C.float)(unsafe.Pointer(&dst[0])), (*C.uint16_t)(unsafe.Pointer(&src[0])), C.size_t(len(src)))
		return
	}
	tab := tensor.Float16Table()
	for i, h := range src {
		dst[i] = tab[h]
	}
}

// NarrowFloat16 rounds src to float16 (to nearest even) into dst (at
// least as long): with F16C where the CPU has it, else with
// tensor.Float32sToFloat16. Both give the same bits for every finite or
// infinite input; NaNs stay NaN (their payloads may differ).
func NarrowFloat16(dst []uint16, src []float32) {
	if len(dst) < len(src) {
		panic("blas: NarrowFloat16: dst shorter than src")
	}
	if len(src) == 0 {
		return
	}
	if halfOK() {
		C.shira_half_narrow((*C.uint16_t)(unsafe.Pointer(&dst[0])), (*C.float)(unsafe.Pointer(&src[0])), C.size_t(len(src)))
		return
	}
	tensor.Float32sToFloat16(dst, src)
}
