package ort

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"unsafe"

	onnxruntime "github.com/yalue/onnxruntime_go"

	"github.com/shira-ort/shira-ort/internal/ortshim"
	"github.com/shira-ort/shira-ort/tensor"
)

// IOInfo describes a model input or output. Shape has -1 for every dynamic
// dimension; SymbolicDims holds each dimension's symbolic name ("" when
// none).
type IOInfo struct {
	Name         string
	DType        tensor.DType
	Shape        []int64
	SymbolicDims []string
}

// Session is a live ONNX Runtime session. For a session made by Open, it
// also owns the exposed weights (a private mapping of model.weights) and
// the patcher that switches adapters in them. All methods are safe for
// concurrent use; see the package documentation for the locking guarantee.
type Session struct {
	// mu: Run holds it shared, adapter switches and Close exclusively.
	mu     sync.RWMutex
	closed bool

	ort     *onnxruntime.DynamicAdvancedSession
	raw     unsafe.Pointer // OrtSession*
	runOpts unsafe.Pointer // OrtRunOptions* or nil

	inputs, outputs []IOInfo
	inputIndex      map[string]int
	inNames         *ortshim.Names // inputs, then (FeedEachRun) weights
	outNames        *ortshim.Names
	binding         WeightBinding

	file    *weightFile
	weights []*weight
	byName  map[string]*weight
	patcher patcher
}

// OpenModel creates a session over a plain ONNX model (a fused model, or
// the original one as a baseline). It has no exposed weights, so the
// adapter methods return an error.
func OpenModel(path string, opts *Options) (*Session, error) {
	return open(path, nil, opts)
}

// Open creates a session over a directory written by export.Expose:
// dir/model.onnx, the weight file named by dir/manifest.json and the
// manifest itself. The exposed weights are mapped copy-on-write and handed
// to ORT without copying; the session's patcher writes adapters into them.
func Open(dir string, opts *Options) (*Session, error) {
	m, err := loadManifest(dir)
	if err != nil {
		return nil, err
	}
	return open(filepath.Join(dir, ModelFile), &weightSource{dir: dir, m: m}, opts)
}

type weightSource struct {
	dir string
	m   *manifest
}

func open(modelPath string, src *weightSource, opts *Options) (_ *Session, err error) {
	if opts == nil {
		opts = &Options{}
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if err := Init(); err != nil {
		return nil, err
	}
	s := &Session{binding: opts.WeightBinding, byName: map[string]*weight{}}
	defer func() {
		if err != nil {
			s.release()
		}
	}()

	if src != nil {
		if s.file, err = mapWeights(filepath.Join(src.dir, src.m.WeightsFile)); err != nil {
			return nil, err
		}
		if s.weights, err = loadWeights(src.m, s.file, opts.VerifyWeights); err != nil {
			return nil, err
		}
		for _, w := range s.weights {
			s.byName[w.info.Name] = w
		}
	}

	so, err := opts.sessionOptions(s.disabledOptimizers())
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	if s.binding == AddInitializer {
		for _, w := range s.weights {
			if err := ortshim.AddInitializer(ortshim.SessionOptionsPtr(so), w.info.Name, ortshim.ValuePtr(w.value)); err != nil {
				return nil, fmt.Errorf("ort: %w", err)
			}
		}
	}
	if s.ort, err = onnxruntime.NewDynamicAdvancedSession(modelPath, nil, nil, so); err != nil {
		return nil, fmt.Errorf("ort: creating session for %s: %w", modelPath, err)
	}
	s.raw = ortshim.SessionPtr(s.ort)
	if err := s.describe(modelPath); err != nil {
		return nil, err
	}
	if len(opts.RunConfig) > 0 {
		if s.runOpts, err = ortshim.NewRunOptions(opts.RunConfig); err != nil {
			return nil, fmt.Errorf("ort: %w", err)
		}
	}
	if len(s.weights) > 0 {
		if s.patcher, err = newPatcher(s.weights, src.m.Fingerprint); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// fp16FuseOptimizer is ORT's transformer that replaces an fp16 initializer
// feeding a Cast-to-fp32 with an fp32 copy (ORT_ENABLE_ALL). On an
// overridable fp16 initializer ORT 1.24.1 crashes in it (SIGSEGV at session
// creation, with or without AddInitializer), and a copy would hide patches
// anyway, so it is disabled for sessions with exposed float16 weights.
const fp16FuseOptimizer = "FuseFp16InitializerToFp32NodeTransformer"

// disabledOptimizers lists the ORT graph transformers that must not run on
// this session's exposed weights.
func (s *Session) disabledOptimizers() []string {
	for _, w := range s.weights {
		if w.info.DType == tensor.Float16 {
			return []string{fp16FuseOptimizer}
		}
	}
	return nil
}

// describe reads the session's inputs, outputs and overridable
// initializers and checks every exposed weight is one of the latter.
func (s *Session) describe(modelPath string) error {
	ins, err := ortshim.Describe(s.raw, ortshim.Inputs)
	if err != nil {
		return fmt.Errorf("ort: %w", err)
	}
	outs, err := ortshim.Describe(s.raw, ortshim.Outputs)
	if err != nil {
		return fmt.Errorf("ort: %w", err)
	}
	over, err := ortshim.Describe(s.raw, ortshim.Overridables)
	if err != nil {
		return fmt.Errorf("ort: %w", err)
	}
	overridable := map[string]ortshim.IOInfo{}
	for _, o := range over {
		overridable[o.Name] = o
	}
	for _, w := range s.weights {
		o, ok := overridable[w.info.Name]
		if !ok {
			return fmt.Errorf("ort: exposed weight %s is not an overridable initializer (initializer and graph input) of %s; ORT could fold or prepack it, so patches would be lost", w.info.Name, modelPath)
		}
		if o.DType != w.info.DType || !sameShape(o.Shape, w.info.Shape) {
			return fmt.Errorf("ort: exposed weight %s is %v %v in the manifest but %v %v in %s", w.info.Name, w.info.DType, w.info.Shape, o.DType, o.Shape, modelPath)
		}
	}
	s.inputIndex = map[string]int{}
	names := []string{}
	for _, in := range ins {
		if _, isWeight := s.byName[in.Name]; isWeight {
			continue
		}
		s.inputIndex[in.Name] = len(s.inputs)
		s.inputs = append(s.inputs, ioInfo(in))
		names = append(names, in.Name)
	}
	if s.binding == FeedEachRun {
		for _, w := range s.weights {
			names = append(names, w.info.Name)
		}
	}
	outNames := []string{}
	for _, o := range outs {
		s.outputs = append(s.outputs, ioInfo(o))
		outNames = append(outNames, o.Name)
	}
	if len(outNames) == 0 {
		return fmt.Errorf("ort: %s has no outputs", modelPath)
	}
	s.inNames = ortshim.NewNames(names)
	s.outNames = ortshim.NewNames(outNames)
	return nil
}

func ioInfo(i ortshim.IOInfo) IOInfo {
	if !i.IsTensor {
		i.DType = tensor.Undefined
	}
	return IOInfo{Name: i.Name, DType: i.DType, Shape: i.Shape, SymbolicDims: i.SymbolicDims}
}

func sameShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func cloneInfos(in []IOInfo) []IOInfo {
	out := make([]IOInfo, len(in))
	for i, v := range in {
		out[i] = IOInfo{Name: v.Name, DType: v.DType, Shape: append([]int64(nil), v.Shape...),
			SymbolicDims: append([]string(nil), v.SymbolicDims...)}
	}
	return out
}

// Inputs describes the model inputs Run expects, in model order. Exposed
// weights are not listed.
func (s *Session) Inputs() []IOInfo { return cloneInfos(s.inputs) }

// Outputs describes the model outputs Run returns, in model order.
func (s *Session) Outputs() []IOInfo { return cloneInfos(s.outputs) }

// Weights describes the exposed weights, in manifest order (empty for a
// session made by OpenModel).
func (s *Session) Weights() []WeightInfo {
	out := make([]WeightInfo, len(s.weights))
	for i, w := range s.weights {
		out[i] = w.info
		out[i].Shape = append([]int64(nil), w.info.Shape...)
	}
	return out
}

// Weight returns the live bytes ORT reads for the exposed weight name, or
// nil when there is none. The slice aliases the session's memory: treat it
// as read-only (write through Set/Apply/Revert), do not read it while a
// switch may run, and do not use it after Close.
func (s *Session) Weight(name string) []byte {
	if w, ok := s.byName[name]; ok {
		return w.data
	}
	return nil
}

// Close releases the ORT session, the weight tensors and the mapping. It
// waits for running Runs and is idempotent.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.release()
}

// release frees everything in dependency order: the session reads the
// weight tensors, which read the mapping.
func (s *Session) release() error {
	var errs []error
	if s.ort != nil {
		if err := s.ort.Destroy(); err != nil {
			errs = append(errs, fmt.Errorf("ort: destroying session: %w", err))
		}
		s.ort, s.raw = nil, nil
	}
	ortshim.ReleaseRunOptions(s.runOpts)
	s.runOpts = nil
	s.inNames.Free()
	s.outNames.Free()
	for _, w := range s.weights {
		if w.value != nil {
			w.value.Destroy()
			w.value = nil
		}
		w.data = nil
	}
	if err := s.file.close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
