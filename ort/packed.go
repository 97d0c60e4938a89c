package ort

import (
	"container/list"
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/closest"
	"github.com/shira-ort/shira-ort/internal/mlaspack"
	"github.com/shira-ort/shira-ort/internal/ortshim"
	"github.com/shira-ort/shira-ort/internal/quant"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// How a packed session works. The session is an ordinary, fully optimized
// ORT session of the model with the exposed weights as constant
// initializers (the baked source), created with the configuration entry
// session.use_env_allocators=1 while the shim's tracking allocator records
// every allocation (ortshim.Record). ORT's CPU MatMul/Gemm kernels allocate
// one buffer per prepacked fp32 weight through it, in MLAS's packed SGEMM
// layout (internal/mlaspack). Open finds each exposed weight's buffer by
// content (the packed bytes it expects from the weight it mapped, one
// comparison per weight and orientation), keeps those buffers pinned and
// builds a patch.Patcher over them. A switch validates the configuration
// against the mapped weights, translates each adapter tensor's flat indices
// into packed offsets (values permuted alike) and lets that patcher scatter
// them under the session's write lock, which Runs hold shared. ORT keeps no
// unpacked copy of a weight it packed, so the originals a revert writes
// back come from the packed buffers themselves (the patcher saves them);
// the mapping of the weight file stays the base weights and its pages are
// dropped.

// packLayout maps an adapter tensor's entries into a packed buffer:
// mlaspack.Layout (SGEMM B) or mlaspack.NBitsLayout (4-bit MatMulNBits B).
// Both are comparable values (translation cache keys).
type packLayout interface {
	Translate(indices []uint32, values []byte, valueSize int) ([]uint32, []byte)
	// Matches reports whether buf is the packed form of the weight's
	// bytes w (float32 for SGEMM B).
	Matches(buf, w []byte) bool
}

// packTarget is one packed buffer of an exposed weight.
type packTarget struct {
	name   string // the buffer's weight name in the packed patcher
	layout packLayout
	shape  []int64 // of the buffer as the packed patcher indexes it
	data   []byte  // ORT's buffer (pinned): the part the packed patcher writes
	// qgemm is set for a QLinearMatMul weight: full is ORT's whole buffer,
	// whose column sums (derived from the codes) a switch recomputes.
	qgemm    *mlaspack.QGemmLayout
	full     []byte
	baseSums []int32 // the column sums ORT computed for the base codes
	// widened: a float16/bfloat16 weight ORT converted to float32 before
	// packing (patch.Weight.Widened)
	widened bool
}

// packedState is a packed session's hold on ORT's packed weights.
type packedState struct {
	rec     *ortshim.Recording // pins the buffers until the session is released
	patcher *patch.Patcher     // over the packed buffers
	targets map[string][]packTarget
	cache   transCache // translations kept for later switches (Options.PackedTranslationCache)
	// quantized names the packed buffers of quantized weights (MatMulNBits
	// and QLinearMatMul B), whose translated values stay until the next
	// switch: patch.Patcher.Survival reads them.
	quantized map[string]bool
	// sums names the QLinearMatMul weights the active configuration
	// patches: their buffers' column sums differ from the base ones.
	sums map[string]bool
}

// updateSums rewrites the column sums of the QLinearMatMul buffers of the
// weights that cfgs (the configuration just set) or the previous
// configuration patch, from their codes; under the session's write lock,
// with the codes, so no Run sees codes and sums that disagree.
func (ps *packedState) updateSums(cfgs []patch.Config) {
	next := map[string]bool{}
	for _, c := range cfgs {
		for _, t := range c.Adapter.Tensors {
			if tgs := ps.targets[t.Name]; len(tgs) > 0 && tgs[0].qgemm != nil {
				next[t.Name] = true
			}
		}
	}
	for name := range ps.sums {
		if !next[name] {
			ps.sumColumns(name) // back to the base sums
		}
	}
	for name := range next {
		ps.sumColumns(name)
	}
	ps.sums = next
}

// sumColumns writes the column sums of weight name's QLinearMatMul
// buffers for the codes the packed patcher's active configuration wrote:
// the base sums plus, per touched code, its change (O(entries + N)).
func (ps *packedState) sumColumns(name string) {
	for _, tg := range ps.targets[name] {
		sums := slices.Clone(tg.baseSums)
		cols := tg.qgemm.Columns()
		ps.patcher.QuantCodes(tg.name, func(idx []uint32, base, code []int32) {
			for j, i := range idx {
				sums[cols.Column(int(i))] += code[j] - base[j]
			}
		})
		tg.qgemm.WriteSums(tg.full, sums)
	}
}

// transKey names one translation: an adapter tensor into one packed layout.
type transKey struct {
	t      *adapter.Tensor
	layout packLayout
}

// transEntry is a cached translation; a (retained by the entry) is the
// adapter t belongs to, so its address cannot be reused while cached.
type transEntry struct {
	key   transKey
	a     *adapter.Adapter
	idx   []uint32
	vals  []byte
	bytes int64
	elem  *list.Element
}

// DefaultPackedTranslationCache is the translation cache of a packed
// session whose Options leave PackedTranslationCache 0: 256 MiB, the
// translations (8 bytes per entry for fp32: packed offset and value) of
// about three 1 % adapters of a 1 B-parameter model, or of hundreds of
// adapters of a model of a few million parameters.
const DefaultPackedTranslationCache = 256 << 20

// translationBudget maps Options.PackedTranslationCache to a byte budget.
func translationBudget(o int64) int64 {
	switch {
	case o == 0:
		return DefaultPackedTranslationCache
	case o < 0:
		return 0
	}
	return o
}

// transCache is an LRU of translations bounded in bytes. Used under the
// session's switchMu (one switch at a time) and by free.
type transCache struct {
	budget, bytes int64
	entries       map[transKey]*transEntry
	lru           list.List // *transEntry, most recently used first
	hits, misses  int64
}

// get returns the cached translation of k, if any.
func (c *transCache) get(k transKey) *transEntry {
	e := c.entries[k]
	if e == nil {
		c.misses++
		return nil
	}
	c.hits++
	c.lru.MoveToFront(e.elem)
	return e
}

// put caches a translation of a tensor of a, evicting the least recently
// used ones to stay within the budget; a translation larger than the
// budget, or of an adapter that cannot be retained, is not kept.
func (c *transCache) put(k transKey, a *adapter.Adapter, idx []uint32, vals []byte) {
	n := int64(len(idx))*4 + int64(len(vals))
	if c.budget <= 0 || n > c.budget || c.entries[k] != nil {
		return
	}
	if a.Retain() != nil {
		return
	}
	for c.bytes+n > c.budget {
		c.evict(c.lru.Back().Value.(*transEntry))
	}
	if c.entries == nil {
		c.entries = map[transKey]*transEntry{}
	}
	e := &transEntry{key: k, a: a, idx: idx, vals: vals, bytes: n}
	e.elem = c.lru.PushFront(e)
	c.entries[k] = e
	c.bytes += n
}

func (c *transCache) evict(e *transEntry) {
	c.lru.Remove(e.elem)
	delete(c.entries, e.key)
	c.bytes -= e.bytes
	e.a.Release()
}

// clear empties the cache, releasing its adapters.
func (c *transCache) clear() {
	for c.lru.Len() > 0 {
		c.evict(c.lru.Back().Value.(*transEntry))
	}
}

// openPacked creates the packed engine: the baked session, recorded, with
// every exposed weight's packed buffer identified. When ORT did not pack a
// weight as expected, reason says so and the engine is returned anyway,
// unpacked (it is a valid baked engine of the base weights).
func (s *Session) openPacked(orient map[string][]bool) (e *engine, reason string, err error) {
	var sess *ortshim.Session
	var st []ProviderStatus
	rec, err := ortshim.Record(func() error {
		stop := s.dropPagesWhile()
		defer stop()
		var err error
		sess, st, err = newORTSession(&s.opts, nil, s.packedPrepare, s.bakedCreate)
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("ort: creating packed session: %w", err)
	}
	e = newEngine(sess, false)
	e.providers = st
	ps, reason, err := s.identifyPacked(rec, orient)
	if err != nil || reason != "" {
		rec.Release() // every block becomes an ordinary one; the engine stays valid
		return e, reason, err
	}
	e.packed = true
	s.packed = ps
	return e, "", nil
}

// packedPrepare hands ORT the model's initializers as bakedPrepare does,
// except that the exposed weights are added in place (AddInitializer: ORT
// reads the session's mapping while it folds and packs them, instead of
// copying them first, which would hold them twice at Open), and routes the
// session's CPU allocations through the environment's (tracking)
// allocator. ORT keeps no reference to a weight once every reader packed
// it, and the mapping outlives the ORT session anyway.
func (s *Session) packedPrepare(so *ortshim.SessionOptions) error {
	for _, w := range s.weights {
		if err := so.AddInitializer(w.info.Name, w.value); err != nil {
			return fmt.Errorf("ort: %w", err)
		}
	}
	if len(s.bakedSrc.otherNames) > 0 {
		if err := so.AddExternalInitializers(s.bakedSrc.otherNames, s.bakedSrc.otherValues); err != nil {
			return fmt.Errorf("ort: %w", err)
		}
	}
	if s.modelDir != "" {
		if err := so.AddConfigEntry(externalFolderKey, s.modelDir); err != nil {
			return fmt.Errorf("ort: %w", err)
		}
	}
	if err := so.AddConfigEntry(ortshim.EnvAllocatorsKey, "1"); err != nil {
		return fmt.Errorf("ort: %w", err)
	}
	return nil
}

// identifyPacked finds, among the recorded blocks, the packed buffer of
// every exposed weight in every expected orientation, keeps those pinned
// and builds the packed patcher. A block matching two weights (equal
// contents) is refused: ORT might share one buffer between them.
func (s *Session) identifyPacked(rec *ortshim.Recording, orient map[string][]bool) (_ *packedState, reason string, err error) {
	bySize := map[int][]int{}
	for i, b := range rec.Blocks {
		bySize[len(b.Data)] = append(bySize[len(b.Data)], i)
	}
	owner := map[int]string{} // block index -> weight that claimed it
	ps := &packedState{rec: rec, targets: map[string][]packTarget{}, cache: transCache{budget: translationBudget(s.opts.PackedTranslationCache)},
		quantized: map[string]bool{}, sums: map[string]bool{}}
	var pw []patch.Weight
	var keep []int64
	var wide []float32 // reused: one weight at a time
	claim := func(bi int, w *weight) string {
		if other, ok := owner[bi]; ok {
			return fmt.Sprintf("weights %s and %s have the same packed contents; ORT may share one buffer between them", closest.Quote(other), closest.Quote(w.info.Name))
		}
		owner[bi] = w.info.Name
		return ""
	}
	// quantTargets claims the recorded blocks (size bytes) that hold w's
	// codes packed by l, as patch weights of dtype dt and shape over the
	// part from off on, with scheme sc; qg is set for a QLinearMatMul B.
	quantTargets := func(w *weight, l packLayout, size, off int, dt tensor.DType, shape []int64, sc *quant.Scheme, qg *mlaspack.QGemmLayout) (found int, reason string) {
		defer s.dropWeight(w)
		for _, bi := range bySize[size] {
			b := rec.Blocks[bi]
			if !l.Matches(b.Data, w.data) {
				continue
			}
			if why := claim(bi, w); why != "" {
				return 0, why
			}
			found++
			name := fmt.Sprintf("%s#packed%d", w.info.Name, len(ps.targets[w.info.Name]))
			tg := packTarget{name: name, layout: l, shape: shape, data: b.Data[off:]}
			if qg != nil {
				tg.qgemm, tg.full, tg.baseSums = qg, b.Data, qg.ReadSums(b.Data)
			}
			ps.targets[w.info.Name] = append(ps.targets[w.info.Name], tg)
			pw = append(pw, patch.Weight{Name: name, DType: dt, Shape: shape, Data: tg.data, Quant: sc})
			ps.quantized[name] = true
			keep = append(keep, b.ID)
		}
		return found, ""
	}
	// identifyQuant identifies a quantized weight's packed buffers: a 4-bit
	// MatMulNBits B or a QLinearMatMul B.
	identifyQuant := func(w *weight) (reason string, err error) {
		name := closest.Quote(w.info.Name)
		if w.quant.Kind == quant.KindNBits {
			q := w.info.Quant
			l, err := mlaspack.NewNBitsLayout(q.K, q.N, q.Bits, q.BlockSize)
			if err != nil {
				return fmt.Sprintf("weight %s: %v", name, err), nil
			}
			sc, err := packedNBitsScheme(w.quant, l)
			if err != nil {
				return "", fmt.Errorf("ort: weight %s: %w", w.info.Name, err)
			}
			found, why := quantTargets(w, l, l.PackedBytes(), 0, tensor.Uint8, []int64{int64(l.Padded()), int64(l.N)}, sc, nil)
			if why == "" && found == 0 {
				why = fmt.Sprintf("no buffer ORT allocated holds MatMulNBits weight %s packed for float32 compute (%d bytes): ORT did not prepack it in the layout shira-ort patches", name, l.PackedBytes())
			}
			return why, nil
		}
		l, err := mlaspack.NewQGemmLayout(int(w.info.Shape[0]), int(w.info.Shape[1]), w.info.DType == tensor.Uint8)
		if err != nil {
			return fmt.Sprintf("weight %s: %v", name, err), nil
		}
		sc, err := packedQGemmScheme(w.quant, l)
		if err != nil {
			return "", fmt.Errorf("ort: weight %s: %w", w.info.Name, err)
		}
		// the codes are patched as int8 (uint8 ones are stored top-bit flipped)
		found, why := quantTargets(w, l, l.PackedBytes(), l.SumsBytes(), tensor.Int8, []int64{int64(l.Columns().Bytes())}, sc, &l)
		if why == "" && found == 0 {
			why = fmt.Sprintf("no buffer ORT allocated holds QDQ weight %s packed as a QLinearMatMul B (%d bytes): ORT did not fuse its MatMul into QLinearMatMul (are the activations quantized too?) or packed it in another layout", name, l.PackedBytes())
		}
		return why, nil
	}
	for _, w := range s.weights {
		if w.quant != nil {
			reason, err := identifyQuant(w)
			if err != nil || reason != "" {
				return nil, reason, err
			}
			continue
		}
		want := w.data // the bytes the packed buffer holds, in the weight's order
		widened := w.info.DType != tensor.Float32
		if widened {
			if n := len(w.data) / 2; cap(wide) < n {
				wide = make([]float32, n)
			}
			want = widenInto(wide, w.info.DType, w.data)
		}
		for _, trans := range orient[w.info.Name] {
			l, err := mlaspack.NewLayout(w.info.Shape, trans)
			if err != nil {
				return nil, fmt.Sprintf("weight %s: %v", closest.Quote(w.info.Name), err), nil
			}
			found := 0
			for _, bi := range bySize[l.PackedBytes()] {
				b := rec.Blocks[bi]
				if !l.Matches(b.Data, want) {
					continue
				}
				if why := claim(bi, w); why != "" {
					return nil, why, nil
				}
				found++
				name := fmt.Sprintf("%s#packed%d", w.info.Name, len(ps.targets[w.info.Name]))
				ps.targets[w.info.Name] = append(ps.targets[w.info.Name], packTarget{name: name, layout: l, shape: []int64{int64(l.PackedLen())}, data: b.Data, widened: widened})
				pw = append(pw, patch.Weight{Name: name, DType: w.info.DType, Widened: widened, Shape: []int64{int64(l.PackedLen())}, Data: b.Data})
				keep = append(keep, b.ID)
			}
			s.dropWeight(w) // read once more only if another orientation needs it
			if found == 0 {
				how := "as stored"
				if trans {
					how = "transposed"
				}
				return nil, fmt.Sprintf("no buffer ORT allocated holds weight %s packed %s (%d bytes): ORT did not prepack it as an SGEMM weight (another kernel, execution provider or optimization took it)", closest.Quote(w.info.Name), how, l.PackedBytes()), nil
			}
		}
	}
	p, err := patch.New(pw, patch.WithoutFingerprintCheck(), patch.WithRounding(s.opts.Rounding))
	if err != nil {
		return nil, "", fmt.Errorf("ort: packed weights: %w", err)
	}
	if err := rec.Keep(keep); err != nil {
		return nil, "", fmt.Errorf("ort: %w", err)
	}
	ps.patcher = p
	return ps, "", nil
}

// packedQGemmScheme is the quantization scheme of QDQ weight scheme sc's
// packed QLinearMatMul buffer (l): int8 codes in packed order (uint8 codes
// are stored with their top bit flipped, q − 128, so their zero points
// move by −128), the same scales, one per tensor or per column.
func packedQGemmScheme(sc *quant.Scheme, l mlaspack.QGemmLayout) (*quant.Scheme, error) {
	ql := sc.QDQLayout()
	zps := make([]int32, len(ql.Scales))
	for i := range zps {
		zps[i] = ql.ZeroPoints[i]
		if l.Unsigned {
			zps[i] -= 128
		}
	}
	p := &quant.Scheme{Kind: quant.KindQDQ, CodeType: tensor.Int8, Shape: []int64{int64(l.Columns().Bytes())},
		Scales: slices.Clone(ql.Scales), ZeroPoints: zps, Columns: l.Columns()}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// packedNBitsScheme is the quantization scheme of MatMulNBits weight
// scheme sc's packed buffer seen as MatMulNBits storage (l): K padded to
// whole blocks, the same scales and zero points, and the packed rows'
// logical rows (for stochastic rounding).
func packedNBitsScheme(sc *quant.Scheme, l mlaspack.NBitsLayout) (*quant.Scheme, error) {
	p := *sc
	p.Shape = []int64{int64(l.Padded()), int64(l.N)}
	p.LogicalRows = make([]int32, l.Padded())
	for k := range l.Padded() {
		p.LogicalRows[l.Row(k)] = int32(k)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// translate returns cfgs with every adapter tensor replaced by its packed
// form for each of its weight's packed buffers: one translation per tensor
// and layout, shared by buffers of the same layout, made in parallel. cfgs
// were validated against the mapped weights.
func (ps *packedState) translate(cfgs []patch.Config) []patch.Config {
	type job struct {
		a      *adapter.Adapter
		t      *adapter.Tensor
		layout packLayout
		idx    []uint32
		vals   []byte
	}
	type jobKey = transKey
	var jobs []*job // the translations to compute
	byKey := map[jobKey]*job{}
	for _, c := range cfgs {
		for ti := range c.Adapter.Tensors {
			t := &c.Adapter.Tensors[ti]
			for _, tg := range ps.targets[t.Name] {
				k := jobKey{t, tg.layout}
				if byKey[k] != nil {
					continue
				}
				j := &job{a: c.Adapter, t: t, layout: tg.layout}
				byKey[k] = j
				if e := ps.cache.get(k); e != nil {
					j.idx, j.vals = e.idx, e.vals
				} else {
					jobs = append(jobs, j)
				}
			}
		}
	}
	var wg sync.WaitGroup
	work := make(chan *job)
	for range min(runtime.GOMAXPROCS(0), len(jobs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				j.idx, j.vals = j.layout.Translate(j.t.Indices, j.t.Values, j.t.ValueDType.Size())
				if q, ok := j.layout.(mlaspack.QGemmLayout); ok && q.Unsigned && j.t.CodeValues() {
					for k := range j.vals {
						j.vals[k] ^= 0x80 // uint8 codes as the buffer's int8 ones
					}
				}
			}
		}()
	}
	for _, j := range jobs {
		work <- j
	}
	close(work)
	wg.Wait()
	for _, j := range jobs {
		ps.cache.put(transKey{j.t, j.layout}, j.a, j.idx, j.vals)
	}

	out := make([]patch.Config, len(cfgs))
	for i, c := range cfgs {
		a := &adapter.Adapter{Name: c.Adapter.Name, Semantics: c.Adapter.Semantics, DefaultAlpha: c.Adapter.DefaultAlpha}
		for ti := range c.Adapter.Tensors {
			t := &c.Adapter.Tensors[ti]
			for _, tg := range ps.targets[t.Name] {
				j := byKey[jobKey{t, tg.layout}]
				dt, vdt := t.DType, t.ValueDType
				if tg.qgemm != nil {
					dt = tensor.Int8 // the packed codes (uint8 ones top-bit flipped)
					if t.CodeValues() {
						vdt = tensor.Int8
					}
				}
				a.Tensors = append(a.Tensors, adapter.Tensor{Name: tg.name, DType: dt, ValueDType: vdt,
					Shape: tg.shape, Indices: j.idx, Values: j.vals})
			}
		}
		out[i] = patch.Config{Adapter: a, Alpha: c.Alpha}
	}
	return out
}

// dropValues lets go of the translated values once the patcher has
// written them: a later switch or revert reads only the indices (and the
// originals the patcher saved), and a switch translates what it applies
// afresh. This keeps a packed session's steady memory at the weights plus
// the active adapters' indices and saved originals. The values of the
// buffers named in keep (quantized weights, whose survival figures are
// computed from them on demand) stay.
func dropValues(tc []patch.Config, keep map[string]bool) {
	for _, c := range tc {
		for i := range c.Adapter.Tensors {
			if !keep[c.Adapter.Tensors[i].Name] {
				c.Adapter.Tensors[i].Values = nil
			}
		}
	}
}

// switchPacked validates cfgs against the mapped weights, translates them
// (Runs go on meanwhile) and scatters them into ORT's packed buffers
// between Runs. Under switchMu.
func (s *Session) switchPacked(cfgs []patch.Config) error {
	if err := s.patcher.Validate(cfgs...); err != nil {
		return err
	}
	if n := s.packed.rec.Freed(); n > 0 {
		// Not seen with any checked ORT version: the memory is still the
		// session's (pinned), but ORT no longer computes with it.
		return fmt.Errorf("ort: ONNX Runtime released %d of the prepacked weight buffers this session patches; switches would not reach its Runs (reopen the session in ModeHybrid)", n)
	}
	tc := s.packed.translate(cfgs)
	s.mu.Lock()
	err := s.packed.patcher.Set(tc...)
	if err == nil {
		s.packed.updateSums(cfgs)
	}
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("ort: patching the packed weights: %w", err) // not expected: cfgs were validated
	}
	dropValues(tc, s.packed.quantized)
	return nil
}

// free releases the packed patcher and unpins the buffers; the engine
// owning them must be released first.
func (ps *packedState) free() {
	if ps == nil {
		return
	}
	if ps.patcher != nil {
		ps.patcher.Close()
		ps.patcher = nil
	}
	ps.cache.clear()
	ps.rec.Release()
	ps.rec = nil
	// The session's Run blocks the allocator kept for reuse go back to the
	// C heap (another packed session's Runs refill what they need).
	ortshim.TrimAllocatorCache()
}

// FallbackReason says why the session serves Runs in Mode() rather than in
// ModePacked, which Options.Mode asked for (explicitly or as the default):
// the first weight whose packed form could not be patched and why. It is
// empty when the session did not fall back.
func (s *Session) FallbackReason() string { return s.fallback }

// packedFallback records why the session is not packed.
func (s *Session) packedFallback(reason string) {
	s.mode = ModeHybrid
	s.fallback = reason
}

// packedEligible runs the static checks (packedOrientations) for an
// exported model opened in ModePacked.
func (s *Session) packedEligible(m *export.Model) (map[string][]bool, bool) {
	orient, reason := packedOrientations(m, s.weights)
	if reason != "" {
		s.packedFallback(reason)
		return nil, false
	}
	if err := ortshim.EnableTracking(); err != nil {
		s.packedFallback(err.Error())
		return nil, false
	}
	return orient, true
}

// openPackedEngine opens a ModePacked session's engine: on success it
// serves Runs; otherwise the session falls back to hybrid
// (FallbackReason), and the engine built, if any, is returned to become
// its first baked engine.
func (s *Session) openPackedEngine(ctx context.Context, m *export.Model, modelName string) (fallbackEngine *engine, err error) {
	orient, ok := s.packedEligible(m)
	if !ok {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !s.opts.KeepMallocSettings {
		tuneMalloc()
	}
	e, reason, err := s.openPacked(orient)
	if err != nil {
		if e != nil {
			e.retire()
		}
		return nil, err
	}
	if reason != "" {
		s.packedFallback(reason)
		return e, nil
	}
	s.cur.Store(e) // released with the session from here on
	if err := s.loadIO(e.raw, modelName, false); err != nil {
		return nil, err
	}
	e.setNames(s)
	s.dropWeightPages()
	return nil, nil
}

// dropPagesInterval is how often dropPagesWhile drops the mapping's pages.
const dropPagesInterval = 10 * time.Millisecond

// dropPagesWhile drops the pages of the session's weight mapping every
// dropPagesInterval until the returned function is called. While ORT
// creates a packed session it reads each exposed weight once, from the
// mapping (AddInitializer), to pack it; the pages it read would otherwise
// stay in the process until Open ends, holding the weights twice, where a
// plain session lets go of each weight once it is packed. The mapping is
// unmodified file memory then, so a dropped page that ORT reads again is
// mapped again from the page cache with the same bytes; once the mapping
// is a snapshot (anonymous memory) nothing is dropped.
func (s *Session) dropPagesWhile() (stop func()) {
	if s.file == nil || len(s.file.mem) == 0 {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(dropPagesInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				s.switchMu.lock() // the mapping's state (anon) does not change meanwhile
				s.file.dropPages()
				s.switchMu.unlock()
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// dropWeight drops the mapping's pages lying wholly inside w's bytes
// (unless the mapping is a snapshot): w is read again from the page cache
// if needed.
func (s *Session) dropWeight(w *weight) {
	s.switchMu.lock()
	defer s.switchMu.unlock()
	if s.file != nil && !s.file.anon {
		unmapPages(w.data)
	}
}

// widenInto converts the float16 or bfloat16 data b to float32 (as ORT
// converts them) into dst and returns the bytes of the result.
func widenInto(dst []float32, dt tensor.DType, b []byte) []byte {
	h := tensor.Uint16s(b)
	out := dst[:len(h)]
	if dt == tensor.Float16 {
		tab := tensor.Float16Table()
		for i, v := range h {
			out[i] = tab[v]
		}
	} else {
		for i, v := range h {
			out[i] = tensor.BFloat16ToFloat32(v)
		}
	}
	return tensor.Bytes(out)
}
