package ort

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"unsafe"

	"github.com/shira-ort/shira-ort/internal/ortshim"
	"github.com/shira-ort/shira-ort/tensor"
)

// Run feeds inputs (by input name; every input of Inputs is required) and
// returns every output by name, as Go-owned tensors. Input dtypes, ranks,
// fixed dimensions and byte lengths are checked before ORT is called
// (errors wrap ErrInput). Input data is read in place, not copied; it must
// not change during Run.
//
// Cancelling ctx terminates a Run in progress through ORT's run options
// (OrtApi::RunOptionsSetTerminate); Run then returns an error wrapping
// ctx.Err() (context.Canceled or context.DeadlineExceeded).
//
// Run is safe for concurrent use and sees exactly one adapter
// configuration: on a live engine it holds the session's read lock, so a
// switch waits for it; on a baked engine (immutable) it holds a reference,
// so a switch swaps in a new engine and the Run finishes on the old one.
func (s *Session) Run(ctx context.Context, inputs map[string]*tensor.Tensor) (map[string]*tensor.Tensor, error) {
	return s.run(ctx, inputs, nil)
}

// run is Run with the given OrtRunOptions* (nil: the session's own, pooled
// per cancellable Run).
func (s *Session) run(ctx context.Context, inputs map[string]*tensor.Tensor, runOpts *ortshim.RunOptions) (map[string]*tensor.Tensor, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
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
	outs, err := s.runCancellable(ctx, e, runOpts, values)
	if err != nil {
		return nil, err
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
			return fmt.Errorf("%w: %q is an exposed weight, not an input: change it with Set/Apply", ErrInput, name)
		}
		return fmt.Errorf("%w: unknown input %q (inputs: %s)", ErrInput, name, s.inputList())
	}
	for _, info := range s.inputs {
		t, ok := inputs[info.Name]
		if !ok || t == nil {
			return fmt.Errorf("%w: missing input %q (inputs: %s)", ErrInput, info.Name, s.inputList())
		}
		if t.DType != info.DType {
			return fmt.Errorf("%w: input %s: got %v, model wants %v", ErrInput, info.Name, t.DType, info.DType)
		}
		if len(t.Shape) != len(info.Shape) {
			return fmt.Errorf("%w: input %s: got rank %d %v, model wants rank %d %s", ErrInput, info.Name, len(t.Shape), t.Shape, len(info.Shape), shapeString(info))
		}
		for d, want := range info.Shape {
			if want >= 0 && t.Shape[d] != want {
				return fmt.Errorf("%w: input %s: got shape %v, model wants %s (dimension %d)", ErrInput, info.Name, t.Shape, shapeString(info), d)
			}
		}
		n, err := tensor.NumElements(t.Shape)
		if err != nil {
			return fmt.Errorf("%w: input %s: %w", ErrInput, info.Name, err)
		}
		if n*t.DType.Size() != len(t.Data) {
			return fmt.Errorf("%w: input %s: %v %v needs %d bytes, has %d", ErrInput, info.Name, t.DType, t.Shape, n*t.DType.Size(), len(t.Data))
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

// runCancellable runs e with inputs and, when ctx can be cancelled,
// terminates the Run through its run options once ctx is done.
func (s *Session) runCancellable(ctx context.Context, e *engine, runOpts *ortshim.RunOptions, values []*ortshim.Value) ([]*tensor.Tensor, error) {
	if ctx.Done() == nil { // never cancelled: no run options of its own
		if runOpts == nil {
			runOpts = s.runOpts
		}
		outs, err := e.raw.Run(runOpts, e.inNames, values, e.outNames)
		if err != nil {
			return nil, fmt.Errorf("ort: %w", err)
		}
		return outs, nil
	}
	pooled := runOpts == nil
	if pooled {
		ro, err := s.runOptsPool.get(s.opts.RunConfig)
		if err != nil {
			return nil, fmt.Errorf("ort: %w", err)
		}
		runOpts = ro
	}
	terminated := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = runOpts.SetTerminate()
		close(terminated)
	})
	outs, err := e.raw.Run(runOpts, e.inNames, values, e.outNames)
	if !stop() { // ctx is done and the terminate ran (or is running)
		<-terminated
		if pooled {
			if runOpts.UnsetTerminate() == nil {
				s.runOptsPool.put(runOpts)
			} else {
				runOpts.Release()
			}
		}
		return nil, fmt.Errorf("ort: run terminated: %w", ctx.Err())
	}
	if pooled {
		s.runOptsPool.put(runOpts)
	}
	if err != nil {
		return nil, fmt.Errorf("ort: %w", err)
	}
	return outs, nil
}

// runOptionsPool keeps run options for cancellable Runs (each needs its
// own, since terminating one stops every Run using it).
type runOptionsPool struct {
	mu   sync.Mutex
	idle []*ortshim.RunOptions
}

// maxPooledRunOptions bounds the idle run options a session keeps.
const maxPooledRunOptions = 64

func (p *runOptionsPool) get(config map[string]string) (*ortshim.RunOptions, error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		ro := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return ro, nil
	}
	p.mu.Unlock()
	return ortshim.NewRunOptions(config)
}

func (p *runOptionsPool) put(ro *ortshim.RunOptions) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) < maxPooledRunOptions {
		p.idle = append(p.idle, ro)
		return
	}
	ro.Release()
}

// free releases the idle run options (Close, after the last Run).
func (p *runOptionsPool) free() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ro := range p.idle {
		ro.Release()
	}
	p.idle = nil
}
