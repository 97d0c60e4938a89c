package patch

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/shira-ort/shira-ort/adapter"
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
	// DType must be Float32, Float16 or BFloat16.
	DType tensor.DType
	// Shape is the weight's shape; adapters must match it.
	Shape []int64
	// Data holds the little-endian elements, aligned to the element size.
	Data []byte
	// BaseSHA256 is the sha256 of the base Data; all zero means unknown
	// and skips the per-tensor base check.
	BaseSHA256 [32]byte
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
	byName  map[string]int
	active  []Config
	scratch []Config
	jobs    []int
	tasks   []task
	scr     []*scratch // one per worker, reused
}

// task is one unit of parallel work: entries [lo, hi) of a weight, or the
// whole weight when hi < 0.
type task struct {
	w, lo, hi int
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
type wstate struct {
	Weight
	numel   int
	cur     []entry  // applied, in configuration order
	next    []entry  // being planned
	touched []uint32 // union of indices currently patched, sorted
	saved32 []uint32 // original bits at touched (4-byte dtypes)
	saved16 []uint16 // original bits at touched (2-byte dtypes)
}

// New returns a Patcher over weights (the slice is copied, the Data
// buffers are not). Names must be unique; dtypes float32, float16 or
// bfloat16; len(Data) must match the shape.
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
		if !w.DType.IsFloat() {
			return nil, fmt.Errorf("%w: %q has dtype %v (want float32, float16 or bfloat16)", ErrWeight, w.Name, w.DType)
		}
		n, err := tensor.NumElements(w.Shape)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %w", ErrWeight, w.Name, err)
		}
		if n*w.DType.Size() != len(w.Data) {
			return nil, fmt.Errorf("%w: %q: %v %v needs %d bytes, have %d", ErrWeight, w.Name, w.DType, w.Shape, n*w.DType.Size(), len(w.Data))
		}
		if n > 0 && uintptr(unsafe.Pointer(unsafe.SliceData(w.Data)))%uintptr(w.DType.Size()) != 0 {
			return nil, fmt.Errorf("%w: %q: data not aligned to %d bytes", ErrWeight, w.Name, w.DType.Size())
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
	return p.plan(cfgs)
}

// Set makes exactly cfgs active (in this order; an empty list means the
// base weights). The whole configuration is validated before the first
// write; on error the weights and the active configuration are unchanged.
func (p *Patcher) Set(cfgs ...Config) error {
	if err := p.plan(cfgs); err != nil {
		return err
	}
	p.commit()
	p.active = append(p.active[:0], cfgs...)
	return nil
}

// Apply adds cfg to the end of the active configuration (fusion). The
// result equals Set(append(Active(), cfg)...).
func (p *Patcher) Apply(cfg Config) error {
	p.scratch = append(append(p.scratch[:0], p.active...), cfg)
	return p.Set(p.scratch...)
}

// Revert writes the saved originals back: every weight is bit-identical
// to its base again and no configuration is active. It cannot fail; the
// error is for future use and is always nil.
func (p *Patcher) Revert() error {
	for i := range p.weights {
		p.weights[i].next = p.weights[i].next[:0]
	}
	p.commit()
	p.active = p.active[:0]
	return nil
}

// Active returns a copy of the active configuration, in order.
func (p *Patcher) Active() []Config {
	return append([]Config(nil), p.active...)
}

// commit moves every weight whose planned entries differ from its applied
// ones: revert to base (phase 1), then apply the plan (phase 2). Big
// tensors are split into chunks so several workers share them; the phases
// are separated because a chunk's apply may touch indices another chunk
// reverts.
func (p *Patcher) commit() {
	p.jobs = p.jobs[:0]
	for i := range p.weights {
		ws := &p.weights[i]
		if !sameEntries(ws.cur, ws.next) {
			p.jobs = append(p.jobs, i)
		}
	}
	p.tasks = p.tasks[:0]
	work := 0
	for _, wi := range p.jobs {
		n := len(p.weights[wi].touched)
		p.addChunks(wi, n)
		work += n
	}
	p.runTasks(work, false)

	p.tasks = p.tasks[:0]
	work = 0
	for _, wi := range p.jobs {
		ws := &p.weights[wi]
		ws.touched = ws.touched[:0]
		ws.cur, ws.next = ws.next, ws.cur[:0]
		switch len(ws.cur) {
		case 0:
		case 1:
			n := ws.cur[0].t.NNZ()
			ws.prepare(n)
			p.addChunks(wi, n)
			work += n
		default:
			p.tasks = append(p.tasks, task{w: wi, hi: -1})
			for _, e := range ws.cur {
				work += e.t.NNZ()
			}
		}
	}
	p.runTasks(work, true)
}

// addChunks queues entries [0, n) of weight wi in chunks.
func (p *Patcher) addChunks(wi, n int) {
	for lo := 0; lo < n; lo += chunkEntries {
		p.tasks = append(p.tasks, task{w: wi, lo: lo, hi: min(lo+chunkEntries, n)})
	}
}

// serialWork is the number of entries below which a phase runs on the
// calling goroutine (starting workers would cost more). A variable for
// tests.
var serialWork = 1 << 14

// runTasks runs p.tasks (reverts, or applies when apply), up to
// opts.workers at a time.
func (p *Patcher) runTasks(work int, apply bool) {
	n := min(p.opts.workers, len(p.tasks))
	if work < serialWork {
		n = 1
	}
	for len(p.scr) < max(n, 1) {
		p.scr = append(p.scr, new(scratch))
	}
	do := func(t task, s *scratch) {
		ws := &p.weights[t.w]
		switch {
		case !apply:
			ws.revertRange(t.lo, t.hi)
		case t.hi < 0:
			ws.applyMerged(s)
		default:
			ws.applySingle(ws.cur[0], t.lo, t.hi, s)
		}
	}
	if n <= 1 {
		for _, t := range p.tasks {
			do(t, p.scr[0])
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for k := range n {
		s := p.scr[k]
		wg.Go(func() {
			for {
				j := int(next.Add(1) - 1)
				if j >= len(p.tasks) {
					return
				}
				do(p.tasks[j], s)
			}
		})
	}
	wg.Wait()
}

func sameEntries(a, b []entry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].same(b[i]) {
			return false
		}
	}
	return true
}
