package ortshim

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/shira-ort/shira-ort/tensor"
)

// Names is a C array of C strings, built once and passed to every Run.
// It is immutable after NewNames and safe for concurrent use; Free it when
// no session uses it any more.
type Names struct {
	arr   **C.char
	names []string
}

// NewNames copies names into C memory.
func NewNames(names []string) *Names {
	n := &Names{names: append([]string(nil), names...)}
	if len(names) == 0 {
		return n
	}
	n.arr = (**C.char)(C.malloc(C.size_t(len(names)) * C.size_t(unsafe.Sizeof((*C.char)(nil)))))
	s := unsafe.Slice(n.arr, len(names))
	for i, name := range names {
		s[i] = C.CString(name)
	}
	return n
}

// Len returns the number of names.
func (n *Names) Len() int { return len(n.names) }

// At returns the i-th name.
func (n *Names) At(i int) string { return n.names[i] }

// Free releases the C memory; Free on a freed or nil Names is a no-op.
func (n *Names) Free() {
	if n == nil || n.arr == nil {
		return
	}
	for _, p := range unsafe.Slice(n.arr, len(n.names)) {
		C.free(unsafe.Pointer(p))
	}
	C.free(unsafe.Pointer(n.arr))
	n.arr = nil
}

// Run calls OrtApi::Run on session (an OrtSession*) with runOptions (an
// OrtRunOptions* or nil), feeding inputs[i] (OrtValue*) as inputNames.At(i).
// ORT allocates every output; each is copied into a Go-owned tensor.Tensor
// (any fixed-size element type, float16 and bfloat16 included) and
// released. Run is safe for concurrent use on one session, as ORT's Run is.
func Run(session, runOptions unsafe.Pointer, inputNames *Names, inputs []unsafe.Pointer, outputNames *Names) ([]*tensor.Tensor, error) {
	if !initialized() {
		return nil, ErrNotInitialized
	}
	if len(inputs) != inputNames.Len() {
		return nil, fmt.Errorf("ortshim: %d input values for %d input names", len(inputs), inputNames.Len())
	}
	if outputNames.Len() == 0 {
		return nil, errors.New("ortshim: Run needs at least one output name")
	}
	for i, v := range inputs {
		if v == nil {
			return nil, fmt.Errorf("ortshim: input %q is a nil OrtValue", inputNames.At(i))
		}
	}
	outs := make([]*C.OrtValue, outputNames.Len())
	var in **C.OrtValue
	if len(inputs) > 0 {
		in = (**C.OrtValue)(unsafe.Pointer(&inputs[0]))
	}
	st := C.shim_run((*C.OrtSession)(session), (*C.OrtRunOptions)(runOptions),
		(**C.char)(unsafe.Pointer(inputNames.arr)), in, C.size_t(len(inputs)),
		(**C.char)(unsafe.Pointer(outputNames.arr)), C.size_t(len(outs)), &outs[0])
	defer func() {
		for _, v := range outs {
			if v != nil {
				C.shim_release_value(v)
			}
		}
	}()
	if err := statusErr("Run", st); err != nil {
		return nil, err
	}
	res := make([]*tensor.Tensor, len(outs))
	for i, v := range outs {
		t, err := Copy(unsafe.Pointer(v))
		if err != nil {
			return nil, fmt.Errorf("output %q: %w", outputNames.At(i), err)
		}
		res[i] = t
	}
	return res, nil
}
