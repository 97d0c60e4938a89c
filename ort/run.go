package ort

import (
	"fmt"
	"runtime"
	"sort"
	"strings"
	"unsafe"

	"github.com/shira-ort/shira-ort/internal/ortshim"
	"github.com/shira-ort/shira-ort/tensor"
)

// Run feeds inputs (by input name; every input of Inputs is required) and
// returns every output by name, as Go-owned tensors. Input dtypes, ranks,
// fixed dimensions and byte lengths are checked before ORT is called.
// Input data is read in place, not copied; it must not change during Run.
//
// Run is safe for concurrent use and sees exactly one adapter
// configuration: on a live engine it holds the session's read lock, so a
// switch waits for it; on a baked engine (immutable) it holds a reference,
// so a switch swaps in a new engine and the Run finishes on the old one.
func (s *Session) Run(inputs map[string]*tensor.Tensor) (map[string]*tensor.Tensor, error) {
	return s.run(inputs, s.runOpts)
}

// run is Run with the given run options (nil for none).
func (s *Session) run(inputs map[string]*tensor.Tensor, runOpts *ortshim.RunOptions) (map[string]*tensor.Tensor, error) {
	if s.cur.Load() == nil {
		return nil, ErrClosed
	}
	if err := s.checkInputs(inputs); err != nil {
		return nil, err
	}

	var pin runtime.Pinner
	defer pin.Unpin()
	values := make([]*ortshim.Value, 0, len(s.inputs)+len(s.weights))
	defer func() { // the weight values at the end belong to the session
		for _, v := range values[:min(len(values), len(s.inputs))] {
			v.Release()
		}
	}()
	for _, info := range s.inputs {
		t := inputs[info.Name]
		if len(t.Data) > 0 {
			pin.Pin(unsafe.SliceData(t.Data))
		}
		v, err := ortshim.NewTensorValue(t.Data, t.DType, t.Shape)
		if err != nil {
			return nil, fmt.Errorf("ort: input %s: %w", info.Name, err)
		}
		values = append(values, v)
	}
	e, done, err := s.acquire()
	if err != nil {
		return nil, err
	}
	defer done()
	values = append(values, e.feed...)
	outs, err := e.raw.Run(runOpts, e.inNames, values, e.outNames)
	if err != nil {
		return nil, fmt.Errorf("ort: %w", err)
	}
	if e.live {
		s.liveRunReturned()
	}
	res := make(map[string]*tensor.Tensor, len(outs))
	for i, t := range outs {
		res[e.outNames.At(i)] = t
	}
	return res, nil
}

// checkInputs validates names, dtypes, ranks, fixed dimensions and data
// lengths.
func (s *Session) checkInputs(inputs map[string]*tensor.Tensor) error {
	for name := range inputs {
		if _, ok := s.inputIndex[name]; ok {
			continue
		}
		if _, ok := s.byName[name]; ok {
			return fmt.Errorf("ort: %q is an exposed weight, not an input: change it with Set/Apply", name)
		}
		return fmt.Errorf("ort: unknown input %q (inputs: %s)", name, s.inputList())
	}
	for _, info := range s.inputs {
		t, ok := inputs[info.Name]
		if !ok || t == nil {
			return fmt.Errorf("ort: missing input %q (inputs: %s)", info.Name, s.inputList())
		}
		if t.DType != info.DType {
			return fmt.Errorf("ort: input %s: got %v, model wants %v", info.Name, t.DType, info.DType)
		}
		if len(t.Shape) != len(info.Shape) {
			return fmt.Errorf("ort: input %s: got rank %d %v, model wants rank %d %s", info.Name, len(t.Shape), t.Shape, len(info.Shape), shapeString(info))
		}
		for d, want := range info.Shape {
			if want >= 0 && t.Shape[d] != want {
				return fmt.Errorf("ort: input %s: got shape %v, model wants %s (dimension %d)", info.Name, t.Shape, shapeString(info), d)
			}
		}
		n, err := tensor.NumElements(t.Shape)
		if err != nil {
			return fmt.Errorf("ort: input %s: %w", info.Name, err)
		}
		if n*t.DType.Size() != len(t.Data) {
			return fmt.Errorf("ort: input %s: %v %v needs %d bytes, has %d", info.Name, t.DType, t.Shape, n*t.DType.Size(), len(t.Data))
		}
	}
	return nil
}

func (s *Session) inputList() string {
	names := make([]string, len(s.inputs))
	for i, in := range s.inputs {
		names[i] = in.Name
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// shapeString renders a declared shape with symbolic names, e.g.
// [batch 8].
func shapeString(info IOInfo) string {
	parts := make([]string, len(info.Shape))
	for i, d := range info.Shape {
		switch {
		case d >= 0:
			parts[i] = fmt.Sprint(d)
		case i < len(info.SymbolicDims) && info.SymbolicDims[i] != "":
			parts[i] = info.SymbolicDims[i]
		default:
			parts[i] = "?"
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}
