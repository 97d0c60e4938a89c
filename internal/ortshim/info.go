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

// Kind selects one of a session's three value lists.
type Kind int

// The lists a session reports: graph inputs that are not initializers,
// graph outputs, and overridable initializers (initializers that are also
// graph inputs).
const (
	Inputs       Kind = C.SHIM_INPUT
	Outputs      Kind = C.SHIM_OUTPUT
	Overridables Kind = C.SHIM_OVERRIDABLE
)

// String names the list ("input", "output", "overridable initializer").
func (k Kind) String() string {
	switch k {
	case Inputs:
		return "input"
	case Outputs:
		return "output"
	case Overridables:
		return "overridable initializer"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// IOInfo describes one value of a session. For tensors, DType is the
// element type and Shape the declared dimensions, -1 where a dimension is
// dynamic; SymbolicDims holds the symbolic name of each dimension ("" when
// it has none). Non-tensor values (sequences, maps) have IsTensor false.
type IOInfo struct {
	Name         string
	IsTensor     bool
	DType        tensor.DType
	Shape        []int64
	SymbolicDims []string
}

// Count returns how many values of the given kind the session has.
func (s *Session) Count(kind Kind) (int, error) {
	p, err := s.ptr()
	if err != nil {
		return 0, err
	}
	return count(p, kind)
}

func count(s *C.OrtSession, kind Kind) (int, error) {
	var n C.size_t
	if err := statusErr("Session"+kind.String()+"Count", C.shim_session_count(s, C.int(kind), &n)); err != nil {
		return 0, err
	}
	return int(n), nil
}

// Describe lists the session's values of the given kind with their names,
// element types and shapes.
func (s *Session) Describe(kind Kind) ([]IOInfo, error) {
	p, err := s.ptr()
	if err != nil {
		return nil, err
	}
	n, err := count(p, kind)
	if err != nil {
		return nil, err
	}
	out := make([]IOInfo, n)
	for i := range out {
		if out[i], err = describe(p, kind, i); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func describe(s *C.OrtSession, kind Kind, i int) (IOInfo, error) {
	var info IOInfo
	var cname *C.char
	if err := statusErr(fmt.Sprintf("%s name %d", kind, i), C.shim_session_name(s, C.int(kind), C.size_t(i), &cname)); err != nil {
		return info, err
	}
	info.Name = C.GoString(cname)
	C.shim_free_string(cname)

	var ti *C.OrtTypeInfo
	if err := statusErr(kind.String()+" type info "+info.Name, C.shim_session_type_info(s, C.int(kind), C.size_t(i), &ti)); err != nil {
		return info, err
	}
	defer C.shim_release_type_info(ti)
	for capacity := 8; ; capacity *= 4 {
		dims := make([]int64, capacity)
		syms := make([]*C.char, capacity)
		var isTensor C.int
		var elem C.int32_t
		var rank C.size_t
		st := C.shim_type_info_tensor(ti, &isTensor, &elem, &rank,
			(*C.int64_t)(unsafe.Pointer(&dims[0])), (**C.char)(unsafe.Pointer(&syms[0])), C.size_t(capacity))
		if err := statusErr(kind.String()+" tensor info "+info.Name, st); err != nil {
			return info, err
		}
		if int(rank) > capacity {
			continue
		}
		info.IsTensor = isTensor != 0
		info.DType = tensor.DType(elem)
		info.Shape = append([]int64{}, dims[:rank]...)
		info.SymbolicDims = make([]string, rank)
		for d := range info.SymbolicDims {
			if syms[d] != nil {
				info.SymbolicDims[d] = C.GoString(syms[d])
			}
		}
		return info, nil
	}
}
