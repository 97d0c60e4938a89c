package patch

import (
	"fmt"
	"math"
	"slices"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/closest"
	"github.com/shira-ort/shira-ort/internal/quant"
)

// Quantized (QDQ) weights take their own path, selected per weight (wstate.q
// != nil), so the float kernels are untouched:
//
//   - plan computes, for a weight whose entries change, every new code of
//     the planned configuration before anything is written (planQuant):
//     the sorted union of the entries' indices, the base code at each
//     (the saved original where the weight is patched now, else the code
//     in Data), the float result of the configuration on the dequantized
//     base with the float path's arithmetic, and its code. A non-finite
//     value or result is refused there (ErrNonFinite), so a refused Set
//     writes nothing, as for floats.
//   - commit writes the outgoing configuration's saved codes back, then
//     the planned codes, in one task per weight (commitQuant), and keeps
//     the base codes read by plan as the new saved originals.
//
// The work per entry is a handful of scalar operations on the code, its
// scale and its zero point; quantized weights are not chunked (weights
// are patched in parallel with each other and with the float weights).

// qstate is the quantized part of a weight's state.
type qstate struct {
	sc *quant.Scheme // the Patcher's own validated copy of Weight.Quant
	// touched is the sorted union of the indices currently patched, saved
	// the original (base) code at each, surv the statistics of writing the
	// active configuration over the base codes.
	touched []uint32
	saved   []int32
	surv    quant.Survival
	// planned by planQuant, written by commitQuant: indices, base codes
	// and new codes, and their statistics.
	pIdx  []uint32
	pBase []int32
	pCode []int32
	pSurv quant.Survival
	cur   []int // per planned entry: next index position (merge walk)
}

// newQState checks a quantized weight for New and returns its state.
func newQState(w *Weight) (*qstate, error) {
	if w.Quant.Kind != quant.KindQDQ {
		return nil, fmt.Errorf("%w: %q: quantization scheme %v is not supported (only QDQ codes, quant.KindQDQ)", ErrWeight, w.Name, w.Quant.Kind)
	}
	if w.Widened {
		return nil, fmt.Errorf("%w: %q: a quantized weight cannot be Widened", ErrWeight, w.Name)
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
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrWeight, w.Name, err)
	}
	if sc.CodeType != w.DType {
		return nil, fmt.Errorf("%w: %q: dtype %v but the quantization scheme stores %v codes", ErrWeight, w.Name, w.DType, sc.CodeType)
	}
	if !slices.Equal(sc.Shape, w.Shape) {
		return nil, fmt.Errorf("%w: %q: shape %v but the quantization scheme's shape is %v", ErrWeight, w.Name, w.Shape, sc.Shape)
	}
	if len(w.Data) != sc.RawLen() {
		return nil, fmt.Errorf("%w: %q: %v %v codes need %d bytes, have %d", ErrWeight, w.Name, w.DType, w.Shape, sc.RawLen(), len(w.Data))
	}
	return &qstate{sc: &sc}, nil
}

// resetPending forgets the planned codes (a revert to the base).
func (q *qstate) resetPending() {
	q.pIdx, q.pBase, q.pCode = q.pIdx[:0], q.pBase[:0], q.pCode[:0]
	q.pSurv = quant.Survival{}
}

// planQuants runs planQuant on every quantized weight whose planned
// entries differ from its applied ones.
func (p *Patcher) planQuants() error {
	for _, i := range p.quants {
		ws := &p.weights[i]
		if slices.EqualFunc(ws.cur, ws.next, entry.same) {
			continue
		}
		if err := ws.planQuant(); err != nil {
			return fmt.Errorf("weight %s: %w", closest.Quote(ws.Name), err)
		}
	}
	return nil
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
func (ws *wstate) planQuant() error {
	q, sc := ws.q, ws.q.sc
	q.resetPending()
	es := ws.next
	total := 0
	for _, e := range es {
		total += len(e.t.Indices)
	}
	if total == 0 {
		return nil
	}
	if len(es) == 1 {
		total = len(es[0].t.Indices)
	}
	q.pIdx = slices.Grow(q.pIdx, total)
	q.pBase = slices.Grow(q.pBase, total)
	q.pCode = slices.Grow(q.pCode, total)
	q.cur = resize(q.cur, len(es))
	cur := q.cur
	clear(cur)
	var sv quant.Survival
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
		if pos < len(q.touched) && q.touched[pos] == i {
			old = q.saved[pos]
		} else {
			old = sc.Code(ws.Data, int(i))
		}
		b := sc.Dequantize(int(i), old)
		acc, hits := b, 0
		var last entry
		var lastK int
		var lastV float32
		for k, e := range es {
			c := cur[k]
			if c >= len(e.t.Indices) || e.t.Indices[c] != i {
				continue
			}
			cur[k]++
			v := value(e.t, c)
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
		code, clipped := sc.Quantize(int(i), target)
		q.pIdx = append(q.pIdx, i)
		q.pBase = append(q.pBase, old)
		q.pCode = append(q.pCode, code)
		if code == old {
			sv.Unchanged++
		}
		if clipped {
			sv.Clipped++
		}
		// as quant.Scheme.ApplyOverwrite counts them
		bb := float64(b)
		in := float64(target) - bb
		la := float64(sc.Dequantize(int(i), code)) - bb
		if math.IsNaN(in) || math.IsInf(in, 0) || math.IsNaN(la) || math.IsInf(la, 0) {
			sv.NonFinite++
			continue
		}
		// explicit conversions keep the sums free of FMA fusion
		sv.IntendedSq += float64(in * in)
		sv.LandedSq += float64(la * la)
		sv.ErrSq += float64((la - in) * (la - in))
		sv.Dot += float64(in * la)
	}
	sv.Touched = len(q.pIdx)
	q.pSurv = sv
	return nil
}

// commitQuant moves the quantized weight from its applied configuration
// to the planned one: the saved original codes are written back, then the
// planned codes, and the planned base codes become the saved originals.
func (ws *wstate) commitQuant() {
	q := ws.q
	// Both calls only fail on arguments plan guarantees (sorted, in range,
	// codes in range); a failure is a bug, and nothing has been written
	// by the failing call.
	if err := q.sc.Restore(ws.Data, q.touched, q.saved); err != nil {
		panic(fmt.Sprintf("patch: reverting quantized weight %q: %v", ws.Name, err))
	}
	if err := q.sc.Restore(ws.Data, q.pIdx, q.pCode); err != nil {
		panic(fmt.Sprintf("patch: writing quantized weight %q: %v", ws.Name, err))
	}
	q.touched, q.pIdx = q.pIdx, q.touched[:0]
	q.saved, q.pBase = q.pBase, q.saved[:0]
	q.surv = q.pSurv
	q.pCode = q.pCode[:0]
	q.pSurv = quant.Survival{}
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
			m[ws.Name] = ws.q.surv
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
