package ortshim

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"errors"
	"unsafe"
)

// LoraAdapter is an OrtLoraAdapter: the parameters of an .onnx_adapter
// file, in host memory, that RunOptions.AddActiveLoraAdapter feeds to
// Runs. It is immutable and may be activated in many Runs at once; Release
// it when none uses it any more.
type LoraAdapter struct{ p *C.OrtLoraAdapter }

// NewLoraAdapter calls OrtApi::CreateLoraAdapter: ORT memory-maps the
// .onnx_adapter file at path.
func NewLoraAdapter(path string) (*LoraAdapter, error) {
	if !initialized() {
		return nil, ErrNotInitialized
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	a := &LoraAdapter{}
	if err := statusErr("CreateLoraAdapter "+path, C.shim_create_lora_adapter(cpath, &a.p)); err != nil {
		return nil, err
	}
	return a, nil
}

// NewLoraAdapterFromArray calls OrtApi::CreateLoraAdapterFromArray: ORT
// copies the .onnx_adapter bytes in data.
func NewLoraAdapterFromArray(data []byte) (*LoraAdapter, error) {
	if !initialized() {
		return nil, ErrNotInitialized
	}
	if len(data) == 0 {
		return nil, errors.New("ortshim: CreateLoraAdapterFromArray: empty adapter")
	}
	a := &LoraAdapter{}
	st := C.shim_create_lora_adapter_from_array(unsafe.Pointer(unsafe.SliceData(data)), C.size_t(len(data)), &a.p)
	if err := statusErr("CreateLoraAdapterFromArray", st); err != nil {
		return nil, err
	}
	return a, nil
}

// Release releases the adapter; no Run that activated it may still be
// running. It is a no-op on nil and on a released adapter.
func (a *LoraAdapter) Release() {
	if a == nil || a.p == nil {
		return
	}
	C.shim_release_lora_adapter(a.p)
	a.p = nil
}

func (a *LoraAdapter) ptr() (*C.OrtLoraAdapter, error) {
	if a == nil || a.p == nil {
		return nil, errReleased("LoraAdapter")
	}
	return a.p, nil
}
