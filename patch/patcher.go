package patch

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/quant"
	"github.com/shira-ort/shira-ort/tensor"
)

// Errors wrapped by the errors of this package, for errors.Is.
var (
	// ErrWeight reports a bad weight given to New.
	ErrWeight = errors.New("patch: bad weight")
	// ErrUnknownTarget reports an adapter tensor naming no weight.
	ErrUnknownTarget = errors.New("patch: unknown target")
	// ErrMismatch reports an adapter tensor whose dtype or shape differs
	// from its weight's.
	ErrMismatch = errors.New("patch: mismatch")
	// ErrFingerprint reports an adapter made for other base weights.
	ErrFingerprint = errors.New("patch: fingerprint mismatch")
	// ErrConfig reports a bad configuration (nil adapter, non-finite
	// alpha, invalid adapter content).
	ErrConfig = errors.New("patch: bad configuration")
)

// Weight is one patchable weight buffer. Data is patched in place and must
// stay valid for the Patcher's lifetime.
type Weight struct {
	// Name is the name adapters target (initializer / graph input name).
	Name string
	// DType must be Float32, Float16 or BFloat16; for a quantized weight
	// (Quant set) it is the code type: Int8, Uint8, Int16 or Uint16 (Uint8
	// for MatMulNBits).
	DType tensor.DType
	// Shape is the weight's shape; adapters must match it. For a
	// MatMulNBits weight it is the logical [K, N] (element (k, n) has flat
	// index k·N + n), not the shape of the packed storage.
	Shape []int64
	// Data holds the little-endian elements, aligned to the element size
	// (for a quantized weight: the raw codes, Quant.RawLen() bytes, no
	// alignment needed; for MatMulNBits the packed blocks, not K·N bytes).
	Data []byte
	// BaseSHA256 is the sha256 of the base Data; all zero means unknown
	// and skips the per-tensor base check.
	BaseSHA256 [32]byte
	// Widened (Float16 and BFloat16 only) says Data holds the weight's
	// values converted to float32, 4 bytes per element, as ONNX Runtime
	// holds a float16 or bfloat16 weight it converts before packing:
	// results are computed and rounded to DType exactly as for a DType
	// buffer, then stored widened, so the stored values are always those
	// of the DType result. The base values must be DType values.
	Widened bool
	// Quant, if not nil, says the weight is quantized: Data holds integer
	// codes that a DequantizeLinear(codes, scale, zero_point, axis) node
	// (quant.KindQDQ) or a com.microsoft.MatMulNBits node (quant.KindNBits:
	// 2-, 4- or 8-bit codes packed in blocks, Data its B input) turns into
	// the float weight, and Quant (a validated or at least complete
	// quant.Scheme) describes them. DType must equal Quant.CodeType (Uint8
	// for MatMulNBits), Shape Quant.Shape (the logical [K, N] for
	// MatMulNBits), len(Data) Quant.RawLen() (the packed length for
	// MatMulNBits), and Widened must be false; New checks this and keeps
	// its own validated copy of the scheme (later changes to *Quant have no
	// effect). Adapter tensors for the weight carry DType = the code type
	// and float values in the dequantized domain. Each touched element's
	// float result is computed from its dequantized base code exactly as
	// for a float32 weight holding that value (see the package
	// documentation), then quantized once with the element's own scale and
	// zero point (quant.Scheme.Quantize: round half to even, saturating).
	// A NaN or infinite value or result is always refused (ErrNonFinite).
	// Revert writes the original codes back (a code narrower than a byte
	// is written without disturbing the other codes of its byte). See
	// Patcher.Survival for how much of the change survives requantization.
	Quant *quant.Scheme
}

// storeSize is the size of one element of Data.
func (w *Weight) storeSize() int {
	if w.Widened {
		return 4
	}
	return w.DType.Size()
}

// Config is one adapter with the scale it is applied at. Alpha is used as
// given (0 is a valid, if useless, scale); use [Default] for the adapter's
// DefaultAlpha.
type Config struct {
	Adapter *adapter.Adapter
	Alpha   float32
}

// Default returns the configuration of a at its DefaultAlpha.
func Default(a *adapter.Adapter) Config { return Config{Adapter: a, Alpha: a.DefaultAlpha} }

// Option configures a Patcher.
type Option func(*options)

type options struct {
	workers          int
	noFingerprint    bool
	modelFingerprint string
	finite           bool                      // WithFiniteCheck
	survival         func(map[string]Survival) // WithSurvivalReport (FuseInto)
	rounding         Rounding                  // WithRounding
}

// WithSurvivalReport has FuseInto call report with the Survival of the
// quantized weights it fused (Patcher.Survival), once, after a successful
// fusion: how much of the adapters' change their codes kept. New and the
// Patcher ignore it (they report through Patcher.Survival).
func WithSurvivalReport(report func(map[string]Survival)) Option {
	return func(o *options) { o.survival = report }
}

// Rounding is how a quantized weight's new codes are rounded from the float
// results: RoundNearestEven (the default; ONNX QuantizeLinear's, the
// smallest error per element) or RoundStochastic (unbiased: a change
// smaller than a step lands in proportion instead of never, at the price
// of up to a whole step of error per element; deterministic, from a fixed
// hash of each element's index). docs/quantization.md measures both.
type Rounding = quant.Rounding

// The roundings (Rounding).
const (
	RoundNearestEven = quant.RoundNearestEven
	RoundStochastic  = quant.RoundStochastic
)

// ParseRounding parses "nearest" or "stochastic" (the flag values of the
// CLI).
func ParseRounding(s string) (Rounding, error) { return quant.ParseRounding(s) }

// WithRounding sets how the codes of quantized weights are rounded
// (default RoundNearestEven); it replaces the rounding of the weights'
// schemes. A live session and the offline fusion that should match it bit
// for bit must use the same rounding. Float weights are not affected.
func WithRounding(r Rounding) Option {
	return func(o *options) { o.rounding = r }
}

// WithWorkers bounds the number of tensors patched in parallel (default
// GOMAXPROCS; values < 1 mean 1).
func WithWorkers(n int) Option { return func(o *options) { o.workers = max(n, 1) } }

// WithoutFingerprintCheck skips the base-weight sha256 and model
// fingerprint checks.
func WithoutFingerprintCheck() Option { return func(o *options) { o.noFingerprint = true } }

// WithModelFingerprint sets the fingerprint of the model the weights belong
// to (export.Manifest.Fingerprint); adapters recording a different one are
// refused. Adapters without a fingerprint are accepted.
func WithModelFingerprint(hex string) Option { return func(o *options) { o.modelFingerprint = hex } }

// Patcher switches adapter configurations on a fixed set of weights. See
// the package documentation for semantics and concurrency rules.
type Patcher struct {
	opts    options
	weights []wstate
	quants  []int // indices of the quantized weights
	nbits   bool  // some are MatMulNBits weights (whole-weight plan tasks)
	byName  map[string]int
	active  []Config
	scratch []Config
	tasks   []task     // the first phase's work
	late    []task     // work that must wait for tasks (applyMerged after its revert)
	scr     []*scratch // one per worker, reused
	run     []task     // the phase running now
	next    atomic.Int64
	wg      sync.WaitGroup
}

// taskKind says what a task does to its weight.
type taskKind uint8

const (
	// revertTask writes the previous configuration's saved originals back
	// at its touched entries [lo, hi).
	revertTask taskKind = iota
	// applyTask applies entries [lo, hi) of the weight's only adapter
	// tensor, the weight holding base values there.
	applyTask
	// switchTask moves the part of the weight covered by entries [lo, hi)
	// of the new (single) adapter tensor from the previous configuration
	// to the new one in one address-ordered pass (see switchChunk).
	switchTask
	// mergedTask applies several adapter tensors to the whole weight,
	// which holds base values (its revert ran in an earlier phase).
	mergedTask
	// quantTask moves the address range of entries [lo, hi) of a quantized
	// weight from the previous configuration to the planned one
	// (commitChunk).
	quantTask
	// quantPlanTask computes the codes of entries [lo, hi) of a quantized
	// weight's only planned adapter tensor (planChunk), writing nothing.
	quantPlanTask
	// nbitsPlanTask computes the codes of a whole MatMulNBits weight with
	// several planned adapter tensors (planQuant), writing nothing.
	nbitsPlanTask
)

// task is one unit of parallel work on weight w.
type task struct {
	w, lo, hi int
	kind      taskKind
}

// entry is one adapter tensor applied to a weight.
type entry struct {
	t     *adapter.Tensor
	alpha float32
	sem   adapter.Semantics
	owner *adapter.Adapter
}

func (e entry) same(f entry) bool {
	return e.t == f.t && e.sem == f.sem && math.Float32bits(e.alpha) == math.Float32bits(f.alpha)
}

// wstate is a weight plus what is currently written into it.
//
// The saved originals are double-buffered: during a commit, prev* hold the
// outgoing configuration's indices and originals (read by the reverts)
// while the incoming configuration records its own into touched and
// saved*, so a switch can revert and apply in one pass over the weight
// without overwriting originals it has not written back yet. Between
// commits prev32 / prev16 are the spare buffers, kept to avoid allocating.
type wstate struct {
	Weight
	numel int
	cur   []entry // applied, in configuration order
	next  []entry // being planned
	// touched is the sorted union of indices currently patched. With one
	// adapter tensor it aliases that tensor's Indices (read only; active
	// adapters must stay alive and unmodified, see the package doc), with
	// several it is union, a buffer owned here.
	touched []uint32
	union   []uint32
	saved32 []uint32 // original bits at touched (4-byte dtypes)
	saved16 []uint16 // original bits at touched (2-byte dtypes)
	// prevTouched is the outgoing touched during a commit (nil otherwise).
	prevTouched []uint32
	prev32      []uint32
	prev16      []uint16
	// q is the state of a quantized weight (Weight.Quant set), which uses
	// none of the float fields above but cur and next; nil for a float
	// weight.
	q *qstate
}

// New returns a Patcher over weights (the slice is copied, the Data
// buffers are not). Names must be unique; dtypes float32, float16 or
// bfloat16, or the codes of a quantized weight (Weight.Quant); len(Data)
// must match the shape (for a quantized weight: Quant.RawLen()).
func New(weights []Weight, opts ...Option) (*Patcher, error) {
	p := &Patcher{opts: options{workers: runtime.GOMAXPROCS(0)}, byName: make(map[string]int, len(weights))}
	for _, o := range opts {
		o(&p.opts)
	}
	p.weights = make([]wstate, len(weights))
	for i, w := range weights {
		if w.Name == "" {
			return nil, fmt.Errorf("%w: weight %d has no name", ErrWeight, i)
		}
		if _, dup := p.byName[w.Name]; dup {
			return nil, fmt.Errorf("%w: duplicate weight name %q", ErrWeight, w.Name)
		}
		if w.Quant != nil {
			q, err := newQState(&w, p.opts.rounding)
			if err != nil {
				return nil, err
			}
			n, _ := tensor.NumElements(w.Shape) // checked by the scheme
			w.Shape = append([]int64(nil), w.Shape...)
			w.Quant = q.sc
			p.weights[i] = wstate{Weight: w, numel: n, q: q}
			p.byName[w.Name] = i
			p.quants = append(p.quants, i)
			p.nbits = p.nbits || q.nb
			continue
		}
		if !w.DType.IsFloat() {
			return nil, fmt.Errorf("%w: %q has dtype %v (want float32, float16 or bfloat16)", ErrWeight, w.Name, w.DType)
		}
		n, err := tensor.NumElements(w.Shape)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %w", ErrWeight, w.Name, err)
		}
		if w.Widened && w.DType.Size() != 2 {
			return nil, fmt.Errorf("%w: %q: only float16 and bfloat16 weights can be stored widened", ErrWeight, w.Name)
		}
		if es := w.storeSize(); n*es != len(w.Data) {
			return nil, fmt.Errorf("%w: %q: %v %v needs %d bytes, have %d", ErrWeight, w.Name, w.DType, w.Shape, n*es, len(w.Data))
		}
		if es := w.storeSize(); n > 0 && uintptr(unsafe.Pointer(unsafe.SliceData(w.Data)))%uintptr(es) != 0 {
			return nil, fmt.Errorf("%w: %q: data not aligned to %d bytes", ErrWeight, w.Name, es)
		}
		w.Shape = append([]int64(nil), w.Shape...)
		p.weights[i] = wstate{Weight: w, numel: n}
		p.byName[w.Name] = i
	}
	return p, nil
}

// Validate checks the configuration cfgs against the weights exactly as
// Set would, without writing anything.
func (p *Patcher) Validate(cfgs ...Config) error {
	if err := retain(cfgs); err != nil {
		return err
	}
	defer release(cfgs)
	return p.planChecked(cfgs)
}

// planChecked is plan, then (WithFiniteCheck) the check of the results.
func (p *Patcher) planChecked(cfgs []Config) error {
	if err := p.plan(cfgs); err != nil {
		return err
	}
	if p.opts.finite {
		return p.checkFinite()
	}
	return nil
}

// Set makes exactly cfgs active (in this order; an empty list means the
// base weights). The whole configuration is validated before the first
// write; on error the weights and the active configuration are unchanged.
// The Patcher retains every adapter of cfgs (adapter.Adapter.Retain) while
// it is active, so closing one does not unmap memory the Patcher reads; an
// adapter already closed is refused (adapter.ErrClosed).
func (p *Patcher) Set(cfgs ...Config) error {
	if err := retain(cfgs); err != nil {
		return err
	}
	if err := p.planChecked(cfgs); err != nil {
		release(cfgs)
		return err
	}
	p.commit()
	release(p.active)
	p.active = append(p.active[:0], cfgs...)
	return nil
}

// Apply adds cfg to the end of the active configuration (fusion). The
// result equals Set(append(Active(), cfg)...).
func (p *Patcher) Apply(cfg Config) error {
	p.scratch = append(append(p.scratch[:0], p.active...), cfg)
	err := p.Set(p.scratch...)
	clear(p.scratch) // drop the adapter pointers
	return err
}

// Revert writes the saved originals back: every weight is bit-identical
// to its base again and no configuration is active. It cannot fail.
func (p *Patcher) Revert() {
	for i := range p.weights {
		p.weights[i].next = p.weights[i].next[:0]
	}
	p.commit()
	release(p.active)
	clear(p.active)
	p.active = p.active[:0]
}

// Close lets go of the active adapters without reverting: the weights keep
// their patched values, and the Patcher must not be used afterwards. Use
// it when the weights themselves are being discarded.
func (p *Patcher) Close() {
	release(p.active)
	clear(p.active)
	p.active = nil
	for i := range p.weights {
		ws := &p.weights[i]
		ws.cur, ws.next, ws.touched, ws.prevTouched = nil, nil, nil, nil
		if ws.q != nil {
			ws.q.touched, ws.q.touchedOwned, ws.q.saved = nil, false, nil
			ws.q.prevTouched, ws.q.prevSaved = nil, nil
			ws.q.resetPending()
		}
	}
}

// retain retains the adapter of every config (once per config); on error
// nothing stays retained.
func retain(cfgs []Config) error {
	for k, c := range cfgs {
		if c.Adapter == nil {
			continue // plan reports it
		}
		if err := c.Adapter.Retain(); err != nil {
			release(cfgs[:k])
			return fmt.Errorf("%w: config %d: %w", ErrConfig, k, err)
		}
	}
	return nil
}

// release ends retain.
func release(cfgs []Config) {
	for _, c := range cfgs {
		if c.Adapter != nil {
			c.Adapter.Release()
		}
	}
}

// Active returns a copy of the active configuration, in order.
func (p *Patcher) Active() []Config {
	return append([]Config(nil), p.active...)
}

// commit moves every weight whose planned entries differ from its applied
// ones. The common cases run in a single parallel phase of independent
// tasks:
//
//   - to the base (no entries): revert chunks;
//   - to one adapter tensor (from the base, from one or from several):
//     switch chunks, each reverting and applying its own address range in
//     one pass, so each cache line of the weight is fetched once even when
//     both configurations touch it (see switchChunk);
//   - to several adapter tensors: the revert runs in a first phase
//     (chunked), then applyMerged over the whole weight. A one-pass version
//     is not worth it there: fusion is the rare, offline-ish case, and
//     applyMerged's bitmap pass covers the whole weight anyway.
func (p *Patcher) commit() {
	p.tasks, p.late = p.tasks[:0], p.late[:0]
	work, lateWork := 0, 0
	for i := range p.weights {
		if ws := &p.weights[i]; !slices.EqualFunc(ws.cur, ws.next, entry.same) {
			w, l := p.queue(i)
			work, lateWork = work+w, lateWork+l
		}
	}
	p.runTasks(p.tasks, work)
	p.runTasks(p.late, lateWork) // after the reverts: applyMerged reads base values
	for i := range p.weights {
		p.weights[i].prevTouched = nil // may alias an adapter that is going away
		if q := p.weights[i].q; q != nil {
			q.prevTouched, q.prevSaved = nil, nil
		}
	}
}

// queue makes weight i's planned entries current, moves its applied ones
// to prev* and queues the work between them: p.tasks for the first phase,
// p.late for what must wait for it. It returns the entries each covers.
func (p *Patcher) queue(i int) (work, lateWork int) {
	ws := &p.weights[i]
	if q := ws.q; q != nil { // quantized: plan computed the codes
		ws.cur, ws.next = ws.next, ws.cur[:0]
		if len(ws.cur) == 0 { // Revert does not plan
			q.resetPending()
		}
		q.begin()
		n, prev := len(q.touched), len(q.prevTouched)
		if q.nb { // chunks aligned so that no byte is shared
			if n > 0 {
				p.tasks = addNBChunks(p.tasks, i, q.touched, &q.nl)
			} else {
				p.tasks = addNBChunks(p.tasks, i, q.prevTouched, &q.nl)
			}
			return n + prev, 0
		}
		if n > 0 {
			p.tasks = addChunks(p.tasks, i, n, quantTask)
		} else {
			p.tasks = addChunks(p.tasks, i, prev, quantTask)
		}
		return n + prev, 0
	}
	prev := len(ws.touched)
	ws.prevTouched, ws.touched = ws.touched, ws.union[:0]
	ws.saved32, ws.prev32 = ws.prev32, ws.saved32
	ws.saved16, ws.prev16 = ws.prev16, ws.saved16
	ws.cur, ws.next = ws.next, ws.cur[:0]
	switch {
	case len(ws.cur) == 1 && ws.cur[0].t.NNZ() > 0:
		n := ws.cur[0].t.NNZ()
		ws.touched = ws.cur[0].t.Indices
		ws.prepare(n)
		switch {
		case prev == 0:
			p.tasks = addChunks(p.tasks, i, n, applyTask)
		case onePass:
			p.tasks = addChunks(p.tasks, i, n, switchTask)
		default:
			p.tasks = addChunks(p.tasks, i, prev, revertTask)
			p.late = addChunks(p.late, i, n, applyTask)
			return prev, n
		}
		return n + prev, 0
	case len(ws.cur) <= 1: // the base (or an empty tensor)
		p.tasks = addChunks(p.tasks, i, prev, revertTask)
		return prev, 0
	default:
		p.tasks = addChunks(p.tasks, i, prev, revertTask)
		p.late = append(p.late, task{w: i, kind: mergedTask})
		for _, e := range ws.cur {
			lateWork += e.t.NNZ()
		}
		return prev, lateWork
	}
}

// nbitsFirst moves the whole-weight MatMulNBits tasks of ts to its front,
// keeping the order otherwise, so that the longest tasks start first.
func nbitsFirst(ts []task) {
	k := 0
	for j, t := range ts {
		if t.kind == nbitsPlanTask {
			copy(ts[k+1:j+1], ts[k:j])
			ts[k] = t
			k++
		}
	}
}

// onePass selects the one-pass switch to a single adapter tensor
// (switchTask); false gives the two-pass path (revert everything, then
// apply), which the tests and benchmarks compare it against.
var onePass = true

// addChunks appends entries [0, n) of weight wi as tasks of kind k, in
// chunks of chunkEntries.
func addChunks(ts []task, wi, n int, k taskKind) []task {
	for lo := 0; lo < n; lo += chunkEntries {
		ts = append(ts, task{w: wi, lo: lo, hi: min(lo+chunkEntries, n), kind: k})
	}
	return ts
}

// serialWork is the number of entries below which a phase runs on the
// calling goroutine (starting workers would cost more). A variable for
// tests.
var serialWork = 1 << 14

// runTasks runs ts, up to opts.workers at a time; work is the number of
// entries they cover. The calling goroutine is one of the workers, so a
// parallel phase starts workers-1 goroutines (one small allocation each).
func (p *Patcher) runTasks(ts []task, work int) {
	if len(ts) == 0 {
		return
	}
	n := min(p.opts.workers, len(ts))
	if work < serialWork {
		n = 1
	}
	for len(p.scr) < n {
		p.scr = append(p.scr, new(scratch))
	}
	p.run = ts
	p.next.Store(0)
	p.wg.Add(n - 1)
	for k := 1; k < n; k++ {
		go p.work(p.scr[k], true)
	}
	p.work(p.scr[0], false)
	p.wg.Wait()
	p.run = nil
}

// work runs tasks of p.run until none is left; done says whether to
// signal p.wg.
func (p *Patcher) work(s *scratch, done bool) {
	for {
		j := int(p.next.Add(1) - 1)
		if j >= len(p.run) {
			break
		}
		p.do(p.run[j], s)
	}
	if done {
		p.wg.Done()
	}
}

// do runs one task with the worker's scratch s.
func (p *Patcher) do(t task, s *scratch) {
	ws := &p.weights[t.w]
	switch t.kind {
	case revertTask:
		ws.revertRange(t.lo, t.hi)
	case applyTask:
		ws.applyRange(ws.cur[0], t.lo, t.hi, s)
	case switchTask:
		ws.switchChunk(t.lo, t.hi, s)
	case quantTask:
		if ws.q.nb {
			ws.commitNBChunk(t.lo, t.hi, s)
		} else {
			ws.commitChunk(t.lo, t.hi)
		}
	case quantPlanTask:
		var j int
		if ws.q.nb {
			j = ws.planNBChunk(ws.next[0], t.lo, t.hi, s)
		} else {
			j = ws.planChunk(ws.next[0], t.lo, t.hi, s)
		}
		if j >= 0 {
			ws.q.bad[t.lo/chunkEntries] = j
		}
	case nbitsPlanTask:
		ws.q.err = ws.planQuant()
	default:
		ws.applyMerged(s)
	}
}
