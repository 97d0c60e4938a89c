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

// CreateLoraAdapter calls OrtApi::CreateLoraAdapter: ORT memory-maps the
// .onnx_adapter file at path and returns an OrtLoraAdapter* whose
// parameters stay in host memory. Release it with ReleaseLoraAdapter.
func CreateLoraAdapter(path string) (unsafe.Pointer, error) {
	if !initialized() {
		return nil, ErrNotInitialized
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var a *C.OrtLoraAdapter
	if err := statusErr("CreateLoraAdapter "+path, C.shim_create_lora_adapter(cpath, &a)); err != nil {
		return nil, err
	}
	return unsafe.Pointer(a), nil
}

// CreateLoraAdapterFromArray calls OrtApi::CreateLoraAdapterFromArray: ORT
// copies the .onnx_adapter bytes in data. Release the result with
// ReleaseLoraAdapter.
func CreateLoraAdapterFromArray(data []byte) (unsafe.Pointer, error) {
	if !initialized() {
		return nil, ErrNotInitialized
	}
	if len(data) == 0 {
		return nil, errors.New("ortshim: CreateLoraAdapterFromArray: empty adapter")
	}
	var a *C.OrtLoraAdapter
	st := C.shim_create_lora_adapter_from_array(unsafe.Pointer(unsafe.SliceData(data)), C.size_t(len(data)), &a)
	if err := statusErr("CreateLoraAdapterFromArray", st); err != nil {
		return nil, err
	}
	return unsafe.Pointer(a), nil
}

// ReleaseLoraAdapter releases an OrtLoraAdapter*; nil is a no-op. No Run
// that activated it may still be running.
func ReleaseLoraAdapter(a unsafe.Pointer) {
	if a != nil && initialized() {
		C.shim_release_lora_adapter((*C.OrtLoraAdapter)(a))
	}
}

// RunOptionsAddActiveLoraAdapter calls OrtApi::RunOptionsAddActiveLoraAdapter:
// every Run with runOptions (an OrtRunOptions*) feeds the adapter's
// parameters (an OrtLoraAdapter*) as inputs of the same names. The adapter
// must outlive those Runs.
func RunOptionsAddActiveLoraAdapter(runOptions, adapter unsafe.Pointer) error {
	if !initialized() {
		return ErrNotInitialized
	}
	if runOptions == nil || adapter == nil {
		return errors.New("ortshim: RunOptionsAddActiveLoraAdapter: nil run options or adapter")
	}
	return statusErr("RunOptionsAddActiveLoraAdapter",
		C.shim_run_options_add_active_lora_adapter((*C.OrtRunOptions)(runOptions), (*C.OrtLoraAdapter)(adapter)))
}
