package ortshim

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/shira-ort/shira-ort/tensor"
)

// NewTensorValue wraps data (not copied) in an ORT tensor of the given
// element type and shape and returns the OrtValue*. The memory must stay
// valid, unmoved and — if it is Go memory — pinned (runtime.Pinner) until
// ReleaseValue. Unlike onnxruntime_go's constructors it accepts rank-0 and
// empty tensors.
func NewTensorValue(data []byte, dtype tensor.DType, shape []int64) (unsafe.Pointer, error) {
	if !initialized() {
		return nil, ErrNotInitialized
	}
	n, err := tensor.NumElements(shape)
	if err != nil {
		return nil, err
	}
	if dtype.Size() == 0 || n*dtype.Size() != len(data) {
		return nil, fmt.Errorf("ortshim: %v %v needs %d bytes, have %d", dtype, shape, n*dtype.Size(), len(data))
	}
	var p unsafe.Pointer
	if len(data) > 0 {
		p = unsafe.Pointer(unsafe.SliceData(data))
	}
	var sp *C.int64_t
	if len(shape) > 0 {
		sp = (*C.int64_t)(unsafe.Pointer(unsafe.SliceData(shape)))
	}
	var v *C.OrtValue
	st := C.shim_create_tensor(p, C.size_t(len(data)), sp, C.size_t(len(shape)), C.int32_t(dtype), &v)
	if err := statusErr("CreateTensorWithDataAsOrtValue", st); err != nil {
		return nil, err
	}
	return unsafe.Pointer(v), nil
}

// ReleaseValue releases an OrtValue*; nil is a no-op.
func ReleaseValue(v unsafe.Pointer) {
	if v != nil && initialized() {
		C.shim_release_value((*C.OrtValue)(v))
	}
}

// TensorView describes a tensor OrtValue without copying: Data aliases the
// value's memory and is valid only while the value lives.
type TensorView struct {
	DType tensor.DType
	Shape []int64
	Data  unsafe.Pointer
	Count int // number of elements
}

// View reports the element type, shape and data pointer of a tensor value
// (an OrtValue*).
func View(value unsafe.Pointer) (TensorView, error) {
	if !initialized() {
		return TensorView{}, ErrNotInitialized
	}
	for capacity := 8; ; capacity *= 4 {
		dims := make([]int64, capacity)
		var isTensor C.int
		var elem C.int32_t
		var rank, count C.size_t
		var data unsafe.Pointer
		st := C.shim_tensor_meta((*C.OrtValue)(value), &isTensor, &elem, &rank,
			(*C.int64_t)(unsafe.Pointer(&dims[0])), C.size_t(capacity), &count, &data)
		if err := statusErr("tensor info", st); err != nil {
			return TensorView{}, err
		}
		if isTensor == 0 {
			return TensorView{}, fmt.Errorf("ortshim: value is not a tensor")
		}
		if int(rank) > capacity {
			continue
		}
		return TensorView{DType: tensor.DType(elem), Shape: append([]int64{}, dims[:rank]...), Data: data, Count: int(count)}, nil
	}
}

// Copy returns a Go-owned copy of the tensor value (an OrtValue*) of any
// fixed-size element type.
func Copy(value unsafe.Pointer) (*tensor.Tensor, error) {
	v, err := View(value)
	if err != nil {
		return nil, err
	}
	size := v.DType.Size()
	if size == 0 {
		return nil, fmt.Errorf("ortshim: element type %v cannot be copied into a tensor.Tensor", v.DType)
	}
	b := make([]byte, v.Count*size)
	if len(b) > 0 {
		copy(b, unsafe.Slice((*byte)(v.Data), len(b)))
	}
	return tensor.New(v.DType, v.Shape, b)
}
