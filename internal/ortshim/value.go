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

// Value is an OrtValue. The shim makes tensors over caller memory
// (NewTensorValue); Session.Run copies ORT's outputs into Go tensors and
// releases them, so they never surface as Values. A Value may be read by
// many Runs at once; Release it after the last one.
type Value struct{ p *C.OrtValue }

// NewTensorValue wraps data (not copied) in an ORT tensor of the given
// element type and shape (OrtApi::CreateTensorWithDataAsOrtValue). The
// memory must stay valid, unmoved and — if it is Go memory — pinned
// (runtime.Pinner) until Release. Unlike onnxruntime_go's constructors it
// accepts rank-0 and empty tensors.
func NewTensorValue(data []byte, dtype tensor.DType, shape []int64) (*Value, error) {
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
	v := &Value{}
	st := C.shim_create_tensor(p, C.size_t(len(data)), sp, C.size_t(len(shape)), C.int32_t(dtype), &v.p)
	if err := statusErr("CreateTensorWithDataAsOrtValue", st); err != nil {
		return nil, err
	}
	return v, nil
}

// Release releases the value (not the memory under it). It is a no-op on
// nil and on a released value.
func (v *Value) Release() {
	if v == nil || v.p == nil {
		return
	}
	C.shim_release_value(v.p)
	v.p = nil
}

func (v *Value) ptr() (*C.OrtValue, error) {
	if v == nil || v.p == nil {
		return nil, errReleased("Value")
	}
	return v.p, nil
}

// TensorView describes a tensor value without copying: Data aliases the
// value's memory and is valid only while the value lives. (Data is the one
// unsafe.Pointer of this package's API: it is memory ORT or the caller
// owns, of any element type.)
type TensorView struct {
	DType tensor.DType
	Shape []int64
	Data  unsafe.Pointer
	Count int // number of elements
}

// View reports the element type, shape and data pointer of a tensor value.
func (v *Value) View() (TensorView, error) {
	p, err := v.ptr()
	if err != nil {
		return TensorView{}, err
	}
	return view(p)
}

func view(value *C.OrtValue) (TensorView, error) {
	for capacity := 8; ; capacity *= 4 {
		dims := make([]int64, capacity)
		var isTensor C.int
		var elem C.int32_t
		var rank, count C.size_t
		var data unsafe.Pointer
		st := C.shim_tensor_meta(value, &isTensor, &elem, &rank,
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

// Copy returns a Go-owned copy of the tensor value, of any fixed-size
// element type.
func (v *Value) Copy() (*tensor.Tensor, error) {
	p, err := v.ptr()
	if err != nil {
		return nil, err
	}
	return copyValue(p)
}

func copyValue(value *C.OrtValue) (*tensor.Tensor, error) {
	v, err := view(value)
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
