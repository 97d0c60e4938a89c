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

// Run calls OrtApi::Run with runOptions (nil for none), feeding inputs[i]
// as inputNames.At(i). ORT allocates every output; each is copied into a
// Go-owned tensor.Tensor (any fixed-size element type, float16 and
// bfloat16 included) and released. Run is safe for concurrent use on one
// session, as ORT's Run is.
func (s *Session) Run(runOptions *RunOptions, inputNames *Names, inputs []*Value, outputNames *Names) ([]*tensor.Tensor, error) {
	sp, err := s.ptr()
	if err != nil {
		return nil, err
	}
	var ro *C.OrtRunOptions
	if runOptions != nil {
		if ro, err = runOptions.ptr(); err != nil {
			return nil, err
		}
	}
	if len(inputs) != inputNames.Len() {
		return nil, fmt.Errorf("ortshim: %d input values for %d input names", len(inputs), inputNames.Len())
	}
	if outputNames.Len() == 0 {
		return nil, errors.New("ortshim: Run needs at least one output name")
	}
	// One array for the inputs' OrtValue* and the outputs ORT allocates.
	vals := make([]*C.OrtValue, len(inputs)+outputNames.Len())
	ins, outs := vals[:len(inputs)], vals[len(inputs):]
	for i, v := range inputs {
		if v == nil || v.p == nil {
			return nil, fmt.Errorf("ortshim: input %q is a nil or released Value", inputNames.At(i))
		}
		ins[i] = v.p
	}
	var in **C.OrtValue
	if len(ins) > 0 {
		in = &ins[0]
	}
	st := C.shim_run(sp, ro, (**C.char)(unsafe.Pointer(inputNames.arr)), in, C.size_t(len(ins)),
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
		t, err := copyValue(v)
		if err != nil {
			return nil, fmt.Errorf("output %q: %w", outputNames.At(i), err)
		}
		res[i] = t
	}
	return res, nil
}
