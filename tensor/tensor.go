// Package tensor holds the small value types every other shira-ort package
// shares: element types numbered as in ONNX's TensorProto.DataType, and a
// dense little-endian tensor whose bytes may alias memory owned elsewhere
// (a weight buffer, an mmapped file, an ORT output).
package tensor

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"unsafe"

	"github.com/x448/float16"
)

// DType is an element type, numbered as ONNX's TensorProto.DataType.
type DType int32

// The element types shira-ort knows by name. Float32, Float16 and BFloat16
// weights are patched directly; Int8, Uint8, Int16 and Uint16 weights as
// quantization codes (IsQuantCode); the others travel as model inputs and
// outputs.
const (
	Undefined DType = 0
	Float32   DType = 1
	Uint8     DType = 2
	Int8      DType = 3
	Uint16    DType = 4
	Int16     DType = 5
	Int32     DType = 6
	Int64     DType = 7
	String    DType = 8
	Bool      DType = 9
	Float16   DType = 10
	Float64   DType = 11
	Uint32    DType = 12
	Uint64    DType = 13
	BFloat16  DType = 16
)

var dtypeNames = map[DType]string{
	Float32: "float32", Uint8: "uint8", Int8: "int8", Uint16: "uint16", Int16: "int16",
	Int32: "int32", Int64: "int64", String: "string", Bool: "bool", Float16: "float16",
	Float64: "float64", Uint32: "uint32", Uint64: "uint64", BFloat16: "bfloat16",
}

var dtypeSizes = map[DType]int{
	Float32: 4, Uint8: 1, Int8: 1, Uint16: 2, Int16: 2, Int32: 4, Int64: 8, Bool: 1,
	Float16: 2, Float64: 8, Uint32: 4, Uint64: 8, BFloat16: 2,
}

// String returns the lower-case name used in manifests, CLI flags and
// messages ("float32", "float16", "bfloat16", ...).
func (d DType) String() string {
	if n, ok := dtypeNames[d]; ok {
		return n
	}
	return fmt.Sprintf("dtype(%d)", int32(d))
}

// Size returns the size of one element in bytes, or 0 for types without a
// fixed size (String, Undefined and unknown numbers).
func (d DType) Size() int { return dtypeSizes[d] }

// IsFloat reports whether d is one of the three patchable float types.
func (d DType) IsFloat() bool { return d == Float32 || d == Float16 || d == BFloat16 }

// IsQuantCode reports whether d is an integer type a quantized weight's
// codes may have (QDQ: the input of DequantizeLinear): Int8, Uint8, Int16
// or Uint16. Adapters for such weights carry float values, which the
// patcher re-quantizes with the weight's own scale and zero point.
func (d DType) IsQuantCode() bool { return d == Int8 || d == Uint8 || d == Int16 || d == Uint16 }

// MarshalText encodes d by name, so JSON manifests read "float16", not 10.
func (d DType) MarshalText() ([]byte, error) {
	if _, ok := dtypeNames[d]; !ok {
		return nil, fmt.Errorf("tensor: cannot encode unknown %v", d)
	}
	return []byte(d.String()), nil
}

// UnmarshalText decodes a name written by MarshalText.
func (d *DType) UnmarshalText(b []byte) error {
	v, err := ParseDType(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// ParseDType accepts the names String returns plus the common aliases
// "float", "fp32", "half", "fp16", "bf16", "double".
func ParseDType(s string) (DType, error) {
	switch strings.ToLower(s) {
	case "float", "fp32", "f32":
		return Float32, nil
	case "half", "fp16", "f16":
		return Float16, nil
	case "bf16":
		return BFloat16, nil
	case "double", "fp64", "f64":
		return Float64, nil
	}
	for d, n := range dtypeNames {
		if n == strings.ToLower(s) {
			return d, nil
		}
	}
	return Undefined, fmt.Errorf("tensor: unknown dtype %q", s)
}

// ErrShape reports a shape that does not fit the data or the element count.
var ErrShape = errors.New("tensor: bad shape")

// NumElements returns the product of shape, or an error when a dimension is
// negative or the product overflows int.
func NumElements(shape []int64) (int, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("%w: negative dimension in %v", ErrShape, shape)
		}
		if d != 0 && n > math.MaxInt64/d {
			return 0, fmt.Errorf("%w: %v overflows", ErrShape, shape)
		}
		n *= d
	}
	if n > math.MaxInt {
		return 0, fmt.Errorf("%w: %v overflows", ErrShape, shape)
	}
	return int(n), nil
}

// Tensor is a dense tensor: element type, shape and little-endian bytes.
// Data may alias memory owned by someone else; Clone makes an owned copy.
type Tensor struct {
	DType DType
	Shape []int64
	Data  []byte
}

// New checks that data holds exactly the elements shape asks for and
// returns a tensor aliasing data.
func New(dtype DType, shape []int64, data []byte) (*Tensor, error) {
	if dtype.Size() == 0 {
		return nil, fmt.Errorf("tensor: %v has no fixed element size", dtype)
	}
	n, err := NumElements(shape)
	if err != nil {
		return nil, err
	}
	if n*dtype.Size() != len(data) {
		return nil, fmt.Errorf("%w: %v %v needs %d bytes, have %d", ErrShape, dtype, shape, n*dtype.Size(), len(data))
	}
	return &Tensor{DType: dtype, Shape: append([]int64(nil), shape...), Data: data}, nil
}

// Zeros returns a new zero-filled tensor.
func Zeros(dtype DType, shape []int64) (*Tensor, error) {
	n, err := NumElements(shape)
	if err != nil {
		return nil, err
	}
	return New(dtype, shape, make([]byte, n*dtype.Size()))
}

// FromFloat32 returns a float32 tensor over a copy of values.
func FromFloat32(shape []int64, values []float32) (*Tensor, error) {
	b := make([]byte, 4*len(values))
	copy(Float32s(b), values)
	return New(Float32, shape, b)
}

// FromInt64 returns an int64 tensor over a copy of values.
func FromInt64(shape []int64, values []int64) (*Tensor, error) {
	b := make([]byte, 8*len(values))
	copy(Int64s(b), values)
	return New(Int64, shape, b)
}

// NumElements returns the number of elements of t.
func (t *Tensor) NumElements() int {
	n, _ := NumElements(t.Shape)
	return n
}

// Clone returns a deep copy of t.
func (t *Tensor) Clone() *Tensor {
	return &Tensor{DType: t.DType, Shape: append([]int64(nil), t.Shape...), Data: append([]byte(nil), t.Data...)}
}

// AsFloat32 decodes any float tensor (float32, float16, bfloat16, float64)
// into a new []float32.
func (t *Tensor) AsFloat32() ([]float32, error) {
	n := t.NumElements()
	out := make([]float32, n)
	switch t.DType {
	case Float32:
		copy(out, Float32s(t.Data))
	case Float16:
		for i, h := range Uint16s(t.Data) {
			out[i] = float16.Frombits(h).Float32()
		}
	case BFloat16:
		for i, h := range Uint16s(t.Data) {
			out[i] = BFloat16ToFloat32(h)
		}
	case Float64:
		for i, v := range unsafe.Slice((*float64)(unsafe.Pointer(unsafe.SliceData(t.Data))), n) {
			out[i] = float32(v)
		}
	default:
		return nil, fmt.Errorf("tensor: %v is not a float type", t.DType)
	}
	return out, nil
}

// Float32s views b (whose length must be a multiple of 4 and whose start
// must be 4-byte aligned) as []float32 without copying.
func Float32s(b []byte) []float32 {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/4)
}

// Uint16s views b as []uint16 (float16 and bfloat16 bit patterns) without copying.
func Uint16s(b []byte) []uint16 {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/2)
}

// Uint32s views b as []uint32 without copying.
func Uint32s(b []byte) []uint32 {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Slice((*uint32)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/4)
}

// Int64s views b as []int64 without copying.
func Int64s(b []byte) []int64 {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Slice((*int64)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/8)
}

// Bytes views a slice of fixed-size numbers as its bytes without copying.
func Bytes[T ~float32 | ~float64 | ~uint16 | ~uint32 | ~int64 | ~int32 | ~uint8](v []T) []byte {
	if len(v) == 0 {
		return nil
	}
	var zero T
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), len(v)*int(unsafe.Sizeof(zero)))
}

// Float32ToBFloat16 rounds f to bfloat16 with round-to-nearest-even, keeping
// NaN a (quiet) NaN.
func Float32ToBFloat16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 { // NaN
		return uint16(b>>16) | 0x0040
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// BFloat16ToFloat32 widens a bfloat16 bit pattern exactly.
func BFloat16ToFloat32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// Float32ToFloat16 rounds f to IEEE half precision with round-to-nearest-even,
// bit-identical to x448/float16 for every input. It is Float32sToFloat16
// on one value; loops over many values call that instead.
func Float32ToFloat16(f float32) uint16 {
	var h [1]uint16
	Float32sToFloat16(h[:], []float32{f})
	return h[0]
}

// Float32sToFloat16 rounds src[i] to IEEE half precision with
// round-to-nearest-even into dst[i] for every i < len(src); dst must be at
// least as long as src (it panics otherwise). The normal range is
// converted here, inline in the loop; zero, subnormals, overflow, Inf and
// NaN go to x448/float16. The result is bit-identical to x448/float16 for
// every input (TestFloat32ToFloat16; SHIRA_EXHAUSTIVE=1 checks all 2^32).
// This is the module's only copy of the conversion: hot loops (the patch
// kernels) narrow a block at a time through it, because a call per element
// would not inline (and an inlined helper returning (bits, ok) measured
// about 15 % slower than the branch written out here).
func Float32sToFloat16(dst []uint16, src []float32) {
	if len(dst) < len(src) {
		panic("tensor: Float32sToFloat16: dst shorter than src")
	}
	dst = dst[:len(src)]
	for i, f := range src {
		u := math.Float32bits(f)
		if a := u & 0x7fffffff; a-0x38800000 < 0x47800000-0x38800000 { // 2^-14 <= |f| < 2^16: normal half (or rounds to Inf)
			r := a - 0x38000000 // rebias the exponent from 127 to 15
			r += 0x0fff + (r>>13)&1
			dst[i] = uint16(u>>16)&0x8000 | uint16(r>>13)
		} else {
			dst[i] = float16.Fromfloat32(f).Bits()
		}
	}
}

// Float16ToFloat32 widens a float16 bit pattern exactly.
func Float16ToFloat32(h uint16) float32 { return float16.Frombits(h).Float32() }

// Float16Table returns Float16ToFloat32 of every float16 bit pattern (a
// 256 KiB table built on first use, NaN payloads included), for hot loops
// that widen many values. The table is shared: do not modify it.
func Float16Table() *[1 << 16]float32 { return float16Table() }

var float16Table = sync.OnceValue(func() *[1 << 16]float32 {
	t := new([1 << 16]float32)
	for i := range t {
		t[i] = Float16ToFloat32(uint16(i))
	}
	return t
})
