package ortshim

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
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
// NNAPI_FLAG_* bits of nnapi_provider_factory.h) to options (an
// OrtSessionOptions*), through NnapiSymbol looked up in the loaded library
// at run time. found is false, and nothing is called, when the library does
// not export the symbol.
func AppendNnapi(options unsafe.Pointer, flags uint32) (found bool, err error) {
	if !initialized() {
		return false, ErrNotInitialized
	}
	var f C.int
	st := C.shim_append_nnapi((*C.OrtSessionOptions)(options), C.uint32_t(flags), &f)
	return f != 0, statusErr("OrtSessionOptionsAppendExecutionProvider_Nnapi", st)
}

// EndProfiling calls OrtApi::SessionEndProfiling on session (an
// OrtSession* created with profiling enabled) and returns the name of the
// JSON profile file ORT wrote.
func EndProfiling(session unsafe.Pointer) (string, error) {
	if !initialized() {
		return "", ErrNotInitialized
	}
	var out *C.char
	if err := statusErr("SessionEndProfiling", C.shim_end_profiling((*C.OrtSession)(session), &out)); err != nil {
		return "", err
	}
	defer C.shim_free_string(out)
	return C.GoString(out), nil
}
