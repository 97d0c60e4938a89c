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

// AvailableProviders calls OrtApi::GetAvailableProviders: the names of the
// execution providers compiled into the loaded library (e.g.
// "CPUExecutionProvider"), in ORT's order. A provider listed here may still
// need a separate provider library at session creation.
func AvailableProviders() ([]string, error) {
	if !initialized() {
		return nil, ErrNotInitialized
	}
	var list **C.char
	var n C.int
	if err := statusErr("GetAvailableProviders", C.shim_available_providers(&list, &n)); err != nil {
		return nil, err
	}
	defer C.shim_release_available_providers(list, n)
	out := make([]string, 0, int(n))
	for _, p := range unsafe.Slice(list, int(n)) {
		out = append(out, C.GoString(p))
	}
	return out, nil
}

// HasSymbol reports whether the loaded ORT library exports the C symbol
// name (dlsym on the library's handle).
func HasSymbol(name string) bool {
	if !initialized() {
		return false
	}
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	return C.shim_has_symbol(cname) != 0
}

// NnapiSymbol is the exported C function that appends the NNAPI execution
// provider; only Android builds of ONNX Runtime export it.
const NnapiSymbol = "OrtSessionOptionsAppendExecutionProvider_Nnapi"

// AppendNnapi appends the NNAPI execution provider with flags (the
// NNAPI_FLAG_* bits of nnapi_provider_factory.h) to o, through NnapiSymbol
// looked up in the loaded library at run time: the generic
// SessionOptionsAppendExecutionProvider does not know NNAPI. found is
// false, and nothing is called, when the library does not export the
// symbol.
func (o *SessionOptions) AppendNnapi(flags uint32) (found bool, err error) {
	p, err := o.ptr()
	if err != nil {
		return false, err
	}
	var f C.int
	st := C.shim_append_nnapi(p, C.uint32_t(flags), &f)
	return f != 0, statusErr(NnapiSymbol, st)
}

// CoreMLSymbol is the exported C function of Apple builds of ONNX Runtime
// that appends the CoreML execution provider with flags.
const CoreMLSymbol = "OrtSessionOptionsAppendExecutionProvider_CoreML"

// AppendCoreML appends the CoreML execution provider with options as
// onnxruntime_go's AppendExecutionProviderCoreMLV2 does: an error unless
// the library exports CoreMLSymbol (Apple builds), else the generic
// SessionOptionsAppendExecutionProvider under the name "CoreML".
func (o *SessionOptions) AppendCoreML(options map[string]string) error {
	if _, err := o.ptr(); err != nil {
		return err
	}
	if !HasSymbol(CoreMLSymbol) {
		return errors.New("ortshim: the library does not export " + CoreMLSymbol + ": this platform or ONNX Runtime build does not support CoreML")
	}
	return o.AppendExecutionProvider("CoreML", options)
}
