package ort

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/ortshim"
	"github.com/shira-ort/shira-ort/patch"
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

// Session is an ONNX Runtime session over a model. For a session made by
// Open, it also owns the exposed weights (a private mapping of
// model.weights) and the patcher that switches adapters in them; its Mode
// decides whether ORT reads those weights in place (live), from prepacked
// copies rebuilt at every switch (baked), or first one then the other
// (hybrid). All methods are safe for concurrent use; see the package
// documentation for the guarantees.
type Session struct {
	// mu: Runs on the live engine hold it shared; patching the mapping
	// while a live engine may read it, and Close, hold it exclusively.
	mu     sync.RWMutex
	closed bool // under mu (and switchMu)

	// switchMu serializes Set/Apply/Revert, rebuild commits and Close;
	// a switch waits for it under its context.
	switchMu ctxMutex

	mode    Mode
	opts    Options
	runOpts *ortshim.RunOptions // or nil: Runs that cannot be cancelled
	// runOptsPool holds run options for cancellable Runs.
	runOptsPool runOptionsPool

	cur      atomic.Pointer[engine] // the engine new Runs use; nil once closed
	liveEng  *engine                // live and hybrid
	bakedSrc *bakedSource           // sessions made by Open: what baked engines are built from
	modelDir string
	packed   *packedState // ModePacked: ORT's packed weights and their patcher
	fallback string       // why a session asked to be packed is not (FallbackReason)

	inputs, outputs []IOInfo
	inputIndex      map[string]int
	binding         WeightBinding

	file        *weightFile
	weights     []*weight
	byName      map[string]*weight
	patcher     *patch.Patcher
	fingerprint string

	// active is the logical configuration, whose adapters the session
	// retains (in baked and hybrid mode the patcher is reverted to the
	// base weights between switches, see switch.go); gen is the switch
	// generation and rebuild the background rebuild (hybrid).
	active  []patch.Config
	scratch []patch.Config // Apply's next configuration (under switchMu)
	patched bool           // the mapping holds active (not the base weights)
	gen     uint64
	rebuild *rebuildState
	// pendingRebuild is the rebuild waiting for the first Run after a
	// switch (hybrid); that Run's return starts it.
	pendingRebuild atomic.Pointer[rebuildState]
}

// OpenModel creates a session over a plain ONNX model (a fused model, or
// the original one as a baseline). It has no exposed weights, so the
// adapter methods return ErrNoWeights and Options.Mode is ignored.
func OpenModel(ctx context.Context, path string, opts *Options) (*Session, error) {
	return open(ctx, modelSource{path: path, name: path}, nil, opts)
}

// OpenModelData is OpenModel for a model held in memory (the bytes of an
// .onnx file; ORT copies what it needs, data may be reused afterwards).
// For a model whose tensors are external data, use OpenModel: ORT resolves
// their locations relative to the model file's directory.
func OpenModelData(ctx context.Context, data []byte, opts *Options) (*Session, error) {
	return open(ctx, modelSource{data: data, name: "(model in memory)"}, nil, opts)
}

// modelSource is where an ORT session's model comes from: a file, or
// bytes (with dir the folder external data is relative to). name is for
// messages.
type modelSource struct {
	path, name string
	data       []byte
	dir        string
}

// create creates an ORT session on the model with so.
func (src modelSource) create(so *ortshim.SessionOptions) (*ortshim.Session, error) {
	if src.data == nil {
		return ortshim.NewSession(src.path, so)
	}
	if src.dir != "" {
		if err := so.AddConfigEntry(externalFolderKey, src.dir); err != nil {
			return nil, err
		}
	}
	return ortshim.NewSessionFromBytes(src.data, so)
}

// externalFolderKey is ORT's session configuration key for the folder that
// external data of a model created from bytes is relative to.
const externalFolderKey = "session.model_external_initializers_file_folder_path"

// Open opens the exported model directory dir (written by export.Expose)
// and creates a session over it: Open is export.Open followed by
// OpenExported, and the export.Model is closed before Open returns.
func Open(ctx context.Context, dir string, opts *Options) (*Session, error) {
	m, err := export.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("ort: %w", err)
	}
	defer m.Close()
	return OpenExported(ctx, m, opts)
}

// OpenExported creates a session over the exported model m. The exposed
// weights are mapped copy-on-write from m's weight file (a private copy
// for this session: nothing is written back); how ORT reads them depends
// on Options.Mode (see Mode). The session does not keep m: it may be
// closed once OpenExported returns.
//
// ctx bounds the wait: Open checks it between its steps (mapping the
// weights, creating each ORT session), and a cancelled Open releases what
// it made and returns ctx.Err().
func OpenExported(ctx context.Context, m *export.Model, opts *Options) (*Session, error) {
	if m == nil {
		return nil, errors.New("ort: OpenExported: nil export.Model")
	}
	src := modelSource{data: m.Graph(), dir: m.Dir(), name: filepath.Join(m.Dir(), m.Manifest().Model)}
	return open(ctx, src, m, opts)
}

func open(ctx context.Context, src modelSource, m *export.Model, opts *Options) (_ *Session, err error) {
	if opts == nil {
		opts = &Options{}
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := Init(); err != nil {
		return nil, err
	}
	s := &Session{binding: opts.WeightBinding, byName: map[string]*weight{}, opts: *opts, mode: ModeLive}
	defer func() {
		if err != nil {
			s.release()
		}
	}()
	step := func() error { return ctx.Err() }

	if m != nil {
		s.mode = opts.Mode.resolve()
		s.modelDir = m.Dir()
		s.fingerprint = m.Fingerprint()
		if s.file, err = mapWeights(m); err != nil {
			return nil, err
		}
		if s.weights, err = loadWeights(m.Manifest(), s.file, opts.VerifyWeights); err != nil {
			return nil, err
		}
		for _, w := range s.weights {
			s.byName[w.info.Name] = w
		}
		if err := s.guardWeights(m); err != nil {
			return nil, err
		}
		if s.bakedSrc, err = newBakedSource(m, s); err != nil {
			return nil, err
		}
	}
	if err := step(); err != nil {
		return nil, err
	}

	// A packed session that falls back to hybrid keeps the session it
	// built as the first baked engine.
	var firstBaked *engine
	defer func() {
		if err != nil && firstBaked != nil {
			firstBaked.retire()
		}
	}()
	if s.mode == ModePacked {
		if firstBaked, err = s.openPackedEngine(ctx, m, src.name); err != nil {
			return nil, err
		}
	}
	if s.mode == ModeLive || s.mode == ModeHybrid {
		if s.liveEng, err = s.newLiveEngine(src, opts); err != nil {
			return nil, err
		}
		if err := s.loadIO(s.liveEng.raw, src.name, true); err != nil {
			return nil, err
		}
		s.liveEng.setNames(s)
		s.cur.Store(s.liveEng)
	}
	if s.mode == ModeBaked || s.mode == ModeHybrid {
		if err := step(); err != nil {
			return nil, err
		}
		if !opts.KeepMallocSettings {
			tuneMalloc()
		}
		e := firstBaked
		if e != nil {
			if err := s.checkEngine(e); err != nil {
				return nil, err
			}
			e.setNames(s)
			firstBaked = nil
		} else if e, err = s.buildFirstBaked(src.name); err != nil {
			return nil, err
		}
		s.cur.Store(e)
		s.dropWeightPages()
	}
	if len(opts.RunConfig) > 0 {
		if s.runOpts, err = ortshim.NewRunOptions(opts.RunConfig); err != nil {
			return nil, fmt.Errorf("ort: %w", err)
		}
	}
	if len(s.weights) > 0 {
		if s.patcher, err = newPatcher(s.weights, s.fingerprint, opts); err != nil {
			return nil, err
		}
	}
	if err := step(); err != nil {
		return nil, err
	}
	return s, nil
}

// buildFirstBaked builds the first baked engine; in baked mode it also
// reads the model's inputs and outputs from it (loadIO).
func (s *Session) buildFirstBaked(modelPath string) (*engine, error) {
	if s.inputs == nil && s.outputs == nil {
		sess, st, err := newORTSession(&s.opts, nil, s.bakedPrepare, s.bakedCreate)
		if err != nil {
			return nil, fmt.Errorf("ort: creating baked session for %s: %w", modelPath, err)
		}
		e := newEngine(sess, false)
		e.providers = st
		if err := s.loadIO(e.raw, modelPath, false); err != nil {
			e.release()
			return nil, err
		}
		e.setNames(s)
		return e, nil
	}
	return s.buildBaked()
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

// loadIO reads the session's inputs, outputs and overridable
// initializers and checks every exposed weight is one of the latter.
func (s *Session) loadIO(raw *ortshim.Session, modelPath string, overridable bool) error {
	ins, err := raw.Describe(ortshim.Inputs)
	if err != nil {
		return fmt.Errorf("ort: %w", err)
	}
	outs, err := raw.Describe(ortshim.Outputs)
	if err != nil {
		return fmt.Errorf("ort: %w", err)
	}
	over, err := raw.Describe(ortshim.Overridables)
	if err != nil {
		return fmt.Errorf("ort: %w", err)
	}
	overridables := map[string]ortshim.IOInfo{}
	for _, o := range over {
		overridables[o.Name] = o
	}
	for _, w := range s.weights {
		if !overridable {
			break
		}
		o, ok := overridables[w.info.Name]
		if !ok {
			return fmt.Errorf("ort: exposed weight %s is not an overridable initializer (initializer and graph input) of %s; ORT could fold or prepack it, so patches would be lost", w.info.Name, modelPath)
		}
		if o.DType != w.info.DType || !slices.Equal(o.Shape, w.info.Shape) {
			return fmt.Errorf("ort: exposed weight %s is %v %v in the manifest but %v %v in %s", w.info.Name, w.info.DType, w.info.Shape, o.DType, o.Shape, modelPath)
		}
	}
	s.inputIndex = map[string]int{}
	for _, in := range ins {
		if _, isWeight := s.byName[in.Name]; isWeight {
			continue
		}
		s.inputIndex[in.Name] = len(s.inputs)
		s.inputs = append(s.inputs, ioInfo(in))
	}
	for _, o := range outs {
		s.outputs = append(s.outputs, ioInfo(o))
	}
	if len(s.outputs) == 0 {
		return fmt.Errorf("ort: %s has no outputs", modelPath)
	}
	return nil
}

func ioInfo(i ortshim.IOInfo) IOInfo {
	if !i.IsTensor {
		i.DType = tensor.Undefined
	}
	return IOInfo{Name: i.Name, DType: i.DType, Shape: i.Shape, SymbolicDims: i.SymbolicDims}
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

// Weight returns a copy of the bytes of the exposed weight name as the
// active adapter configuration makes them (what the session computes
// with). The error wraps ErrUnknownWeight for a name that is not an
// exposed weight and is ErrClosed after Close.
func (s *Session) Weight(name string) ([]byte, error) {
	w, ok := s.byName[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownWeight, name)
	}
	s.switchMu.lock()
	defer s.switchMu.unlock()
	if s.closed {
		return nil, ErrClosed
	}
	out := append([]byte(nil), w.data...) // no switch runs: the bytes are stable
	if s.mode == ModeLive || s.patched || len(s.active) == 0 {
		return out, nil
	}
	// baked and hybrid: the mapping holds the base weights; fuse the
	// active adapters' tensors for this weight into the copy
	sub := make([]patch.Config, 0, len(s.active))
	for _, c := range s.active {
		a := *c.Adapter
		a.Tensors = nil
		for _, t := range c.Adapter.Tensors {
			if t.Name == name {
				a.Tensors = append(a.Tensors, t)
			}
		}
		sub = append(sub, patch.Config{Adapter: &a, Alpha: c.Alpha})
	}
	pw := []patch.Weight{patchWeight(w, out)}
	if err := patch.FuseInto(pw, sub, patch.WithoutFingerprintCheck(), patch.WithRounding(s.opts.Rounding)); err != nil {
		return nil, fmt.Errorf("ort: weight %s: %w", name, err)
	}
	return out, nil
}

// Close releases the ORT sessions, the weight tensors and the mapping, and
// lets go of the active adapters (without reverting: the session's weights
// are discarded). Calls after Close, and Runs that had not started
// computing, return ErrClosed; Runs already computing finish first (Close
// waits for them, and for a background rebuild), so ORT resources are freed
// only after the last of them. Close is idempotent.
func (s *Session) Close() error {
	s.switchMu.lock()
	if s.closed {
		s.switchMu.unlock()
		return nil
	}
	s.gen++ // supersedes a rebuild in progress
	rb := s.rebuild
	if rb != nil {
		rb.kick() // a rebuild waiting to start exits at once
	}
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.switchMu.unlock()
	if rb != nil {
		<-rb.done
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.release()
}

// release frees everything in dependency order: the engines read the
// weight tensors, which read the mapping.
func (s *Session) release() error {
	var errs []error
	if e := s.cur.Swap(nil); e != nil && e != s.liveEng {
		e.retire()
	}
	if s.liveEng != nil {
		s.liveEng.retire()
		s.liveEng = nil
	}
	s.packed.free() // after the engine owning the packed buffers
	s.packed = nil
	s.runOpts.Release()
	s.runOpts = nil
	s.runOptsPool.free()
	s.bakedSrc.free()
	if s.patcher != nil {
		s.patcher.Close()
		s.patcher = nil
	}
	releaseConfigs(s.active)
	s.active = nil
	for _, w := range s.weights {
		if w.value != nil {
			w.value.Release()
			w.value = nil
		}
		w.data = nil
	}
	if err := s.file.close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
