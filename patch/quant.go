package patch

import (
	"fmt"
	"math"
	"slices"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/closest"
	"github.com/shira-ort/shira-ort/internal/quant"
	"github.com/shira-ort/shira-ort/tensor"
)

// Quantized (QDQ and MatMulNBits) weights take their own path, selected
// per weight (wstate.q != nil), so the float kernels are untouched:
//
//   - plan computes, for a weight whose entries change, every new code of
//     the planned configuration before anything is written: the sorted
//     union of the entries' indices, the base code at each (the saved
//     original where the weight is patched now, else the code in Data),
//     the float result of the configuration on the dequantized base with
//     the float path's arithmetic, and its code. A non-finite value or
//     result is refused there (ErrNonFinite), so a refused Set writes
//     nothing, as for floats. With one adapter tensor on the weight (the
//     common case) the codes are computed in parallel chunks of its
//     entries (planChunk, inlined per-element arithmetic, prefetching);
//     several tensors are merged serially (planQuant).
//   - commit writes, in parallel chunks that each cover a disjoint address
//     range, the outgoing configuration's saved codes back and the planned
//     codes in one address-ordered pass (commitChunk, as switchChunk), and
//     keeps the base codes read by plan as the new saved originals.
//   - the survival statistics are computed when asked for (Survival), from
//     the saved base codes and the kept float results, serially in index
//     order, so they cost the switch nothing.
//
// MatMulNBits weights (qstate.nb) share the planning and bookkeeping above
// with kernels of their own (nbitskernel.go, scheme parameters in
// nblayout): with one adapter tensor, plan runs in parallel chunks of its
// entries (planNBChunk: inlined decode of the code's bits, scale and zero
// point, prefetching the code bytes, scales and zero points ahead); with
// several, planQuant merges them with the scheme's per-element methods,
// one task per weight (nbitsPlanTask). Commit runs in parallel chunks
// (commitNBChunk, read-modify-write of the codes' bits) whose boundaries
// addNBChunks puts at logical indices that are multiples of N·(8/bits):
// codes narrower than a byte share it only with codes of the same column,
// block and group of 8/bits rows, all inside one such range, so no two
// chunks touch the same byte.

// qstate is the quantized part of a weight's state.
type qstate struct {
	sc  *quant.Scheme // the Patcher's own validated copy of Weight.Quant
	lay qlayout       // sc's parameters for the inlined kernels (QDQ only)
	nl  nblayout      // sc's parameters for the inlined kernels (MatMulNBits only)
	nb  bool          // a MatMulNBits scheme
	// touched is the sorted union of the indices currently patched (owned
	// by idx buffers here when touchedOwned, else the indices of the only
	// adapter tensor, read only), saved the original (base) code at each,
	// target the float result whose code was written there (empty when
	// tgtOf: then recomputed by survival from the only entry).
	touched      []uint32
	touchedOwned bool
	saved        []int32
	codes        []int32
	target       []float32
	tgtOf        bool
	// planned by plan, made current by begin: indices, base codes, new
	// codes and float results.
	pIdx    []uint32
	pOwned  bool
	pBase   []int32
	pCode   []int32
	pTarget []float32
	// idxBuf is a spare owned index buffer (never touched).
	idxBuf []uint32
	// during a commit: the outgoing indices and saved codes.
	prevTouched []uint32
	prevSaved   []int32
	// planning state: chunked (planned by planChunk tasks), bad the first
	// refused entry per chunk (-1 if none), err the serial planner's error.
	chunked bool
	// fused: the plan was deferred to the commit (fusable), which
	// computes the codes as it writes them; commitFused is that flag for
	// the commit running now (set by begin).
	fused, commitFused bool
	// deqBound bounds |dequantized code| over the whole scheme (for
	// fusable).
	deqBound float64
	bad      []int
	err      error
	cur      []int // per planned entry: next index position (merge walk)
}

// newQState checks a quantized weight for New and returns its state, its
// codes rounded by r.
func newQState(w *Weight, r Rounding) (*qstate, error) {
	nb := false
	switch w.Quant.Kind {
	case quant.KindQDQ:
	case quant.KindNBits:
		nb = true
	default:
		return nil, fmt.Errorf("%w: %q: quantization scheme %v is not supported (quant.KindQDQ or quant.KindNBits)", ErrWeight, w.Name, w.Quant.Kind)
	}
	if w.Widened {
		return nil, fmt.Errorf("%w: %q: a quantized weight cannot be Widened", ErrWeight, w.Name)
	}
	if nb && w.DType != tensor.Uint8 {
		return nil, fmt.Errorf("%w: %q: MatMulNBits weight has dtype %v (want uint8, the packed storage)", ErrWeight, w.Name, w.DType)
	}
	if !w.DType.IsQuantCode() {
		return nil, fmt.Errorf("%w: %q: quantized weight has dtype %v (want the int8, uint8, int16 or uint16 codes)", ErrWeight, w.Name, w.DType)
	}
	// A private copy, validated here: the caller's Scheme is neither
	// written (it may be shared) nor trusted to stay unchanged.
	sc := *w.Quant
	sc.Shape = slices.Clone(sc.Shape)
	sc.Scales = slices.Clone(sc.Scales)
	sc.ZeroPoints = slices.Clone(sc.ZeroPoints)
	sc.FloatZeroPoints = slices.Clone(sc.FloatZeroPoints)
	sc.LogicalRows = slices.Clone(sc.LogicalRows)
	sc.Rounding = r
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrWeight, w.Name, err)
	}
	if sc.CodeType != w.DType {
		return nil, fmt.Errorf("%w: %q: dtype %v but the quantization scheme stores %v codes", ErrWeight, w.Name, w.DType, sc.CodeType)
	}
	if !slices.Equal(sc.Shape, w.Shape) {
		return nil, fmt.Errorf("%w: %q: shape %v but the quantization scheme's shape is %v", ErrWeight, w.Name, w.Shape, sc.Shape)
	}
	if nb {
		// Shape is the logical [K, N]; Data the packed blocks
		if len(w.Data) != sc.RawLen() {
			return nil, fmt.Errorf("%w: %q: MatMulNBits %d-bit %v codes (block size %d) need %d packed bytes, have %d",
				ErrWeight, w.Name, sc.Bits, w.Shape, sc.BlockSize, sc.RawLen(), len(w.Data))
		}
		q := &qstate{sc: &sc, nl: newNBLayout(&sc), nb: true}
		for p, scale := range sc.Scales {
			z := 1 << (sc.Bits - 1) // the default zero point
			var zf float64
			switch {
			case sc.ZeroPoints != nil:
				z = int(sc.ZeroPoints[p])
			case sc.FloatZeroPoints != nil:
				z, zf = 0, math.Abs(float64(sc.FloatZeroPoints[p]))
			}
			q.deqBound = max(q.deqBound, math.Abs(float64(scale))*(float64(int(1)<<sc.Bits)+float64(z)+zf))
		}
		return q, nil
	}
	if len(w.Data) != sc.RawLen() {
		return nil, fmt.Errorf("%w: %q: %v %v codes need %d bytes, have %d", ErrWeight, w.Name, w.DType, w.Shape, sc.RawLen(), len(w.Data))
	}
	q := &qstate{sc: &sc, lay: newQLayout(&sc)}
	for p, scale := range q.lay.scales {
		z := float64(q.lay.zps[p])
		q.deqBound = max(q.deqBound, math.Abs(float64(scale))*max(math.Abs(q.lay.fqmin-z), math.Abs(q.lay.fqmax-z)))
	}
	return q, nil
}

// noFuse turns the fused commit of quantized weights off (tests compare
// both ways).
var noFuse = false

// resetPending forgets the planned codes (a revert to the base).
func (q *qstate) resetPending() {
	q.pIdx, q.pOwned = nil, false
	q.pBase, q.pCode, q.pTarget = q.pBase[:0], q.pCode[:0], q.pTarget[:0]
	q.chunked, q.fused, q.err = false, false, nil
}

// begin makes the planned codes current for a commit: the outgoing
// indices and saved codes move to prev* (read by commitChunk), the planned
// ones become current, and the outgoing buffers become the spares the
// next plan fills.
func (q *qstate) begin() {
	oldT, oldOwned := q.touched, q.touchedOwned
	q.prevTouched, q.prevSaved = oldT, q.saved
	q.touched, q.touchedOwned = q.pIdx, q.pOwned
	if q.pOwned {
		q.idxBuf = nil // now touched
	}
	if oldOwned && cap(oldT) > cap(q.idxBuf) {
		q.idxBuf = oldT[:0] // written by a later plan only, after the commit
	}
	q.saved, q.pBase = q.pBase, q.saved[:0]
	q.codes, q.pCode = q.pCode, q.codes[:0]
	q.target, q.pTarget = q.pTarget, q.target[:0]
	q.tgtOf = q.chunked // the chunk planners keep no float results
	q.commitFused = q.fused
	q.pIdx, q.pOwned = nil, false
	q.chunked, q.fused, q.err = false, false, nil
}

// planQuants computes the codes of every quantized weight whose planned
// entries differ from its applied ones: weights with one adapter tensor
// in parallel chunks (planChunk, planNBChunk for MatMulNBits), MatMulNBits
// weights with several in one task each (planQuant, in parallel with the
// other tasks), the other QDQ weights serially (planQuant). The
// first error in weight order (and, within a weight, in index order) is
// returned, as a serial plan would.
func (p *Patcher) planQuants() error {
	p.tasks = p.tasks[:0]
	work := 0
	for _, i := range p.quants {
		ws := &p.weights[i]
		if slices.EqualFunc(ws.cur, ws.next, entry.same) {
			continue
		}
		q := ws.q
		q.resetPending()
		codes := slices.ContainsFunc(ws.next, func(e entry) bool { return e.t.CodeValues() })
		if es := ws.next; q.nb && (len(es) != 1 || len(es[0].t.Indices) == 0 || codes) {
			p.tasks = append(p.tasks, task{w: i, kind: nbitsPlanTask})
			for _, e := range ws.next {
				work += len(e.t.Indices)
			}
			continue
		}
		if es := ws.next; len(es) == 1 && len(es[0].t.Indices) > 0 && !codes {
			n := len(es[0].t.Indices)
			q.chunked = true
			q.pIdx = es[0].t.Indices
			q.pBase, q.pCode, q.pTarget = resize(q.pBase, n), resize(q.pCode, n), q.pTarget[:0]
			if q.fusable(es[0]) && !noFuse {
				q.fused, q.bad = true, q.bad[:0] // valid: the commit computes the codes
				continue
			}
			q.bad = resize(q.bad, (n+chunkEntries-1)/chunkEntries)
			for k := range q.bad {
				q.bad[k] = -1
			}
			p.tasks = addChunks(p.tasks, i, n, quantPlanTask)
			work += n
			continue
		}
		q.err = ws.planQuant() // QDQ, several tensors
	}
	if p.nbits {
		nbitsFirst(p.tasks)
	}
	p.runTasks(p.tasks, work)
	p.tasks = p.tasks[:0]
	for _, i := range p.quants {
		ws := &p.weights[i]
		if slices.EqualFunc(ws.cur, ws.next, entry.same) {
			continue
		}
		err := ws.q.err
		if ws.q.chunked {
			for _, j := range ws.q.bad {
				if j >= 0 {
					err = ws.planError(ws.next[0], j)
					break
				}
			}
		}
		if err != nil {
			return fmt.Errorf("weight %s: %w", closest.Quote(ws.Name), err)
		}
	}
	return nil
}

// baseCode returns the base code at index i: the saved original where the
// weight is patched now, else the code in Data.
func (ws *wstate) baseCode(i uint32) int32 {
	q := ws.q
	if pos, ok := slices.BinarySearch(q.touched, i); ok {
		return q.saved[pos]
	}
	return q.sc.Code(ws.Data, int(i))
}

// planError builds the error for entry j of e, the first one planChunk
// refused, as planQuant words it.
func (ws *wstate) planError(e entry, j int) error {
	sc := ws.q.sc
	i := e.t.Indices[j]
	v := value(e.t, j)
	if !finite(v) {
		return fmt.Errorf("%w: adapter %s value %d (index %d) is %v; a quantized weight cannot hold it", ErrNonFinite, closest.Quote(e.owner.Name), j, i, v)
	}
	old := ws.baseCode(i)
	b := sc.Dequantize(int(i), old)
	target := v
	if !e.exact() {
		d := v
		if e.sem == adapter.Overwrite {
			d = v - b
		}
		target = b + float32(e.alpha*d)
	}
	return fmt.Errorf("%w: adapter %s value %d (index %d) turns the base value %v (code %d) into %v (alpha %v)",
		ErrNonFinite, closest.Quote(e.owner.Name), j, i, b, old, target, e.alpha)
}

// planQuant computes the codes the planned entries (next) give the
// quantized weight, into the pending buffers, without writing the weight.
// Per index i of the union, with base code o and b = Dequantize(o): if a
// single entry touches i and it is an exact overwrite (alpha 1), the
// result is its value v; otherwise acc = b, then for each entry touching
// i, in configuration order, acc = acc + float32(alpha*d) with d = v - b
// (overwrite) or v (delta). This is exactly what the float kernels
// compute for a float32 weight holding b (applySingle, applyMerged and
// writeSole). The result is quantized once (quant.Scheme.Quantize).
// planChunk is the same for one adapter tensor, inlined and chunked. A
// MatMulNBits weight (q.nb) reads, dequantizes and quantizes through the
// scheme's per-element methods instead of the inlined QDQ layout.
func (ws *wstate) planQuant() error {
	q, l, sc, nb := ws.q, &ws.q.lay, ws.q.sc, ws.q.nb
	es := ws.next
	total := 0
	for _, e := range es {
		total += len(e.t.Indices)
	}
	q.pIdx, q.pOwned = q.idxBuf[:0], true
	if total == 0 {
		return nil
	}
	q.pIdx = slices.Grow(q.pIdx, total)
	q.pBase = slices.Grow(q.pBase, total)
	q.pCode = slices.Grow(q.pCode, total)
	q.pTarget = slices.Grow(q.pTarget, total)
	q.cur = resize(q.cur, len(es))
	cur := q.cur
	clear(cur)
	pos := 0 // merge walk over q.touched
	for {
		// the smallest index not yet done
		i, found := uint32(0), false
		for k, e := range es {
			if c := cur[k]; c < len(e.t.Indices) && (!found || e.t.Indices[c] < i) {
				i, found = e.t.Indices[c], true
			}
		}
		if !found {
			break
		}
		for pos < len(q.touched) && q.touched[pos] < i {
			pos++
		}
		var old int32
		switch {
		case pos < len(q.touched) && q.touched[pos] == i:
			old = q.saved[pos]
		case nb:
			old = sc.Code(ws.Data, int(i))
		default:
			old = l.get(ws.Data, i)
		}
		var pi int
		var b float32
		if nb {
			b = sc.Dequantize(int(i), old)
		} else {
			pi = l.param(i)
			b = l.deq(pi, old)
		}
		acc, hits := b, 0
		var last entry
		var lastK int
		var lastV float32
		var lastCode int32 // the code of the last entry, when it holds codes (lastIsCode)
		lastIsCode := false
		for k, e := range es {
			c := cur[k]
			if c >= len(e.t.Indices) || e.t.Indices[c] != i {
				continue
			}
			cur[k]++
			v := value(e.t, c)
			lastIsCode = false
			if e.t.CodeValues() {
				code := e.t.Code(c)
				if lo, hi := sc.CodeRange(); code < lo || code > hi {
					return fmt.Errorf("%w: adapter %s code %d (index %d) is outside the weight's code range [%d, %d]", ErrMismatch, closest.Quote(e.owner.Name), code, i, lo, hi)
				}
				v, lastCode, lastIsCode = sc.Dequantize(int(i), code), code, true
			}
			if !finite(v) {
				return fmt.Errorf("%w: adapter %s value %d (index %d) is %v; a quantized weight cannot hold it", ErrNonFinite, closest.Quote(e.owner.Name), c, i, v)
			}
			d := v
			if e.sem == adapter.Overwrite {
				d = v - b
			}
			acc += float32(e.alpha * d)
			hits++
			last, lastK, lastV = e, c, v
		}
		target := acc
		if hits == 1 && last.exact() {
			target = lastV
		}
		if !finite(target) {
			return fmt.Errorf("%w: adapter %s value %d (index %d) turns the base value %v (code %d) into %v (alpha %v)",
				ErrNonFinite, closest.Quote(last.owner.Name), lastK, i, b, old, target, last.alpha)
		}
		var code int32
		switch {
		case hits == 1 && last.exact() && lastIsCode:
			code = lastCode // a sole code written as it is, whatever the rounding
		case nb:
			code, _ = sc.Quantize(int(i), target)
		default:
			code, _ = l.quant(sc.Rounding, sc.DitherIndex(i), pi, target)
		}
		q.pIdx = append(q.pIdx, i)
		q.pBase = append(q.pBase, old)
		q.pCode = append(q.pCode, code)
		q.pTarget = append(q.pTarget, target)
	}
	return nil
}

// survival computes the statistics of the active configuration cur over
// the base codes, as quant.Scheme.ApplyOverwrite counts them, in index
// order. When the chunk planners computed the codes (tgtOf), the float
// results are recomputed from the only entry as planQuant computes them
// (one contributor).
func (q *qstate) survival(cur []entry) Survival {
	sc := q.sc
	var sv quant.Survival
	saved := q.saved[:len(q.touched)]
	var target []float32
	var e entry
	if q.tgtOf {
		e = cur[0]
	} else {
		target = q.target[:len(q.touched)]
	}
	for j, i := range q.touched {
		old := saved[j]
		b := sc.Dequantize(int(i), old)
		var t float32
		if q.tgtOf {
			t = value(e.t, j)
			if !e.exact() {
				d := t
				if e.sem == adapter.Overwrite {
					d = t - b
				}
				t = b + float32(e.alpha*d)
			}
		} else {
			t = target[j]
		}
		_, clipped := sc.Quantize(int(i), t)
		code := q.codes[j] // the code written (a sole code-valued entry's is its own)
		if code == old {
			sv.Unchanged++
		}
		if clipped {
			sv.Clipped++
		}
		sv.Record(b, t, sc.Dequantize(int(i), code))
	}
	sv.Touched = len(q.touched)
	return sv
}

// QuantCodes calls fn with the entries of quantized weight name that the
// active configuration patches: their sorted indices, the base codes saved
// there and the codes written there (read only, valid during the call;
// empty after Revert). It is for callers that keep data derived from the
// codes up to date, such as the column sums of a packed QLinearMatMul
// weight. It reports false for a float or unknown weight. Like the other
// methods, it must not run concurrently with Set, Apply or Revert.
func (p *Patcher) QuantCodes(name string, fn func(idx []uint32, base, code []int32)) bool {
	i, ok := p.byName[name]
	if !ok || p.weights[i].q == nil {
		return false
	}
	q := p.weights[i].q
	n := len(q.touched)
	fn(q.touched, q.saved[:n], q.codes[:n])
	return true
}

// Survival returns, for every quantized weight the active configuration
// patches, how much of the intended change survived requantization
// (quant.Survival): over the union of the configuration's indices on that
// weight, Touched entries, Unchanged codes (the change was lost to
// rounding), Clipped codes (saturated at the code range), and the squared
// norms of the intended delta (float result − dequantized base code) and
// of the landed one (dequantized new code − dequantized base code), with
// their error and dot product. The figures describe the active
// configuration against the base weights (what the last successful Set
// or Apply wrote), not the step from the previous configuration: a weight a
// switch leaves alone keeps its figures. Float weights, and quantized
// weights no active adapter targets, are absent; after Revert the map is
// empty. Combine weights with quant.Survival.Add. The map is new on every
// call.
func (p *Patcher) Survival() map[string]Survival {
	m := make(map[string]Survival)
	for _, i := range p.quants {
		if ws := &p.weights[i]; len(ws.cur) > 0 {
			m[ws.Name] = ws.q.survival(ws.cur)
		}
	}
	return m
}

// Survival is what a quantized weight kept of the adapters' change: the
// entries touched, the codes left unchanged and the codes clipped at the
// code range, and the norms of the intended change (the float result
// minus the dequantized base) and of the landed one (the dequantized new
// code minus the dequantized base). LandedFraction is ‖landed‖ ÷
// ‖intended‖, RelativeError ‖landed − intended‖ ÷ ‖intended‖; Add
// combines weights.
type Survival = quant.Survival
