package patch

import (
	"math"
	"math/bits"
	"unsafe"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/prefetch"
	"github.com/shira-ort/shira-ort/internal/quant"
	"github.com/shira-ort/shira-ort/tensor"
)

// qlayout is a QDQ scheme prepared for the inlined kernels: the same
// arithmetic as quant.Scheme's Code, Dequantize and Quantize, without the
// per-call checks, and the parameter index (i / inner) % dim computed
// with multiplications (Lemire, Kaser & Kurz, "Faster remainder by direct
// computation", exact for 32-bit numerators and divisors 2 ≤ d < 2^32).
type qlayout struct {
	scales       []float32
	zps          []int32
	mode         uint8                // qPerTensor, qLastAxis, qInner, qSlow or qPackedCols
	cols         *quant.PackedColumns // qPackedCols
	inner, dim   uint64
	mInner, mDim uint64 // ceil(2^64 / d)
	shift        uint   // log2(bytes per code)
	flip         uint32 // sign bit of a signed code (0 unsigned)
	bias         int32  // flip as a value
	qmin, qmax   int32
	fqmin, fqmax float64
}

const (
	qPerTensor  = iota
	qLastAxis   // inner == 1
	qInner      // inner > 1
	qSlow       // a divisor too large for the fast path
	qPackedCols // codes in packed QGEMM order (quant.PackedColumns)
)

func newQLayout(sc *quant.Scheme) qlayout {
	ql := sc.QDQLayout()
	l := qlayout{scales: ql.Scales, zps: ql.ZeroPoints, inner: uint64(ql.Inner), dim: uint64(ql.Dim),
		qmin: ql.Qmin, qmax: ql.Qmax, fqmin: float64(ql.Qmin), fqmax: float64(ql.Qmax)}
	if ql.Esize == 2 {
		l.shift = 1
	}
	if ql.Signed {
		l.flip = 1 << (8*ql.Esize - 1)
		l.bias = int32(l.flip)
	}
	fast := func(d uint64) bool { return d >= 2 && d < 1<<32 }
	switch {
	case ql.Columns != nil && len(ql.Scales) > 1:
		l.mode, l.cols = qPackedCols, ql.Columns
	case ql.Inner == 0:
		l.mode = qPerTensor
	case ql.Inner == 1 && fast(l.dim):
		l.mode, l.mDim = qLastAxis, math.MaxUint64/l.dim+1
	case fast(l.inner) && fast(l.dim):
		l.mode, l.mInner, l.mDim = qInner, math.MaxUint64/l.inner+1, math.MaxUint64/l.dim+1
	default:
		l.mode = qSlow
	}
	return l
}

// param returns the parameter index of element i.
func (l *qlayout) param(i uint32) int {
	switch l.mode {
	case qPerTensor:
		return 0
	case qLastAxis:
		r, _ := bits.Mul64(l.mDim*uint64(i), l.dim)
		return int(r)
	case qInner:
		d, _ := bits.Mul64(l.mInner, uint64(i))
		r, _ := bits.Mul64(l.mDim*d, l.dim)
		return int(r)
	case qPackedCols:
		return l.cols.Column(int(i))
	}
	return int(uint64(i) / l.inner % l.dim)
}

// get reads the code of element i from raw.
func (l *qlayout) get(raw []byte, i uint32) int32 {
	if l.shift == 0 {
		return int32(uint32(raw[i])^l.flip) - l.bias
	}
	b := raw[2*uint64(i):][:2]
	return int32((uint32(b[0])|uint32(b[1])<<8)^l.flip) - l.bias
}

// deq is quant.Scheme.Dequantize for parameter index p.
func (l *qlayout) deq(p int, q int32) float32 {
	return float32(q-l.zps[p]) * l.scales[p]
}

// quant is quant.Scheme.Quantize for element i of parameter index p,
// rounded by r.
func (l *qlayout) quant(r quant.Rounding, i uint32, p int, v float32) (int32, bool) {
	x := v / l.scales[p]
	if x != x { // NaN: the lowest code, as in ORT
		return l.qmin, true
	}
	f := r.Round(i, float64(x)) + float64(l.zps[p]) // i: the dither index
	if f < l.fqmin {
		return l.qmin, true
	}
	if f > l.fqmax {
		return l.qmax, true
	}
	return int32(f), false
}

// fin reports whether f is finite.
func fin(f float32) bool { return math.Float32bits(f)&0x7fffffff < 0x7f800000 }

// qprefetch asks for the code lines of the elements at ix.
func (ws *wstate) qprefetch(ix []uint32) {
	if len(ix) == 0 || noPrefetch {
		return
	}
	prefetch.T2(unsafe.Pointer(unsafe.SliceData(ws.Data)), ix, ws.q.lay.shift)
}

// planChunk is planQuant for entries [lo, hi) of the weight's only
// planned adapter tensor e: it fills pBase and pCode there (no float results: see qstate.tgtOf). It
// returns the first entry it refuses (a non-finite value or result), or
// -1; it writes nothing to the weight.
func (ws *wstate) planChunk(e entry, lo, hi int, s *scratch) int {
	q := ws.q
	l := &q.lay
	ix := e.t.Indices
	// The entries the weight is patched at now take their base code from
	// the saved originals, not Data: the main loop walks a cursor a over
	// the sorted old indices as it goes (old[a] is the first >= i), a
	// window of qwin of them compared at once, branch-free, and a
	// rarely-taken catch-up when the whole window is behind.
	old, saved := q.touched, q.saved
	saved = saved[:len(old)]
	a := 0
	if len(old) > 0 {
		a = slicesSearch(old, ix[lo])
	}
	raw := ws.Data
	pBase, pCode := q.pBase, q.pCode
	step := min(switchBlock, blockLen)
	alpha, mode := e.alpha, planMode(e)
	stoch := q.sc.Rounding == quant.RoundStochastic
	ws.qprefetch(ix[lo:min(lo+step, hi)])
	for b0 := lo; b0 < hi; b0 += step {
		b1 := min(b0+step, hi)
		ws.qprefetch(ix[b1:min(b1+step, hi)])
		blk := ix[b0:b1]
		vals := blockValues(e, b0, b1, s)
		vals = vals[:len(blk)]
		pb, pc := pBase[b0:b1], pCode[b0:b1]
		pb, pc = pb[:len(blk)], pc[:len(blk)]
		for j, i := range blk {
			if n := behind(old, a, i); n < qwin {
				a += n
			} else {
				a = catchUp(old, a, i)
			}
			var o int32
			if a < len(old) && old[a] == i {
				o = saved[a]
			} else {
				o = l.get(raw, i)
			}
			v := vals[j]
			if !fin(v) {
				return b0 + j
			}
			c, ok := l.newCode(l.param(i), o, v, alpha, mode, stoch, q.sc, i)
			if !ok {
				return b0 + j
			}
			pb[j], pc[j] = o, c
		}
	}
	return -1
}

// newCode is the code of an entry with value v (combined with the base
// value of code o as mode says: planMode) at parameter p of element i,
// and false when the result is not finite: l.quant with the scale and
// zero point at hand. t finite and the scale finite and non-zero make t/sc
// a number, and the clamp is branch-free (the side a clipped code
// saturates at is data-dependent).
func (l *qlayout) newCode(p int, o int32, v, alpha float32, mode int, stoch bool, sc *quant.Scheme, i uint32) (int32, bool) {
	s := l.scales[p]
	zp := l.zps[p]
	b := float32(o-zp) * s
	t := v
	switch mode {
	case 1:
		t = b + float32(alpha*v)
	case 2:
		t = b + float32(alpha*(v-b))
	}
	if !fin(t) {
		return 0, false
	}
	var r float64
	if stoch {
		r = math.Floor(float64(t/s)+quant.Dither(sc.DitherIndex(i))) + float64(zp)
	} else {
		r = math.RoundToEven(float64(t/s)) + float64(zp)
	}
	return int32(max(min(r, l.fqmax), l.fqmin)), true
}

// qfused is the write of new entries [b0, b1) of touched in a fused
// commit (qstate.commitFused): each one's base code is read from the
// weight (the outgoing codes up to it are already written back), its new
// code computed from e (as planChunk would) and written, and both are
// kept (saved, codes).
func (ws *wstate) qfused(e entry, b0, b1 int) {
	q := ws.q
	l := &q.lay
	raw := ws.Data
	ix := q.touched[b0:b1]
	vals := tensor.Float32s(e.t.Values)[b0:b1]
	saved, codes := q.saved[b0:b1], q.codes[b0:b1]
	vals, saved, codes = vals[:len(ix)], saved[:len(ix)], codes[:len(ix)]
	a, mode := e.alpha, planMode(e)
	stoch := q.sc.Rounding == quant.RoundStochastic
	for j, i := range ix {
		o := l.get(raw, i)
		c, _ := l.newCode(l.param(i), o, vals[j], a, mode, stoch, q.sc, i) // fusable: finite
		saved[j], codes[j] = o, c
	}
	ws.qwrite(ix, codes)
}

// qwin is the window of the merge cursor of planChunk and planNBChunk:
// the number of old indices compared with each new one (the comparisons
// are written out for 4). With old and new indices of similar density,
// a window is behind entirely for about 1 entry in 16; a window of 8 was
// measured no faster.
const qwin = 4

// behind is the merge cursor's step over the sorted old indices: how many
// of the qwin from a are < i, compared at once, branch-free (small enough
// to inline). qwin means the whole window is behind, or fewer than qwin
// are left: the caller then catches up (catchUp).
func behind(old []uint32, a int, i uint32) int {
	if a+qwin > len(old) {
		return qwin
	}
	w := (*[qwin]uint32)(old[a:])
	u := uint64(i)
	return int((uint64(w[0])-u)>>63 + (uint64(w[1])-u)>>63 + (uint64(w[2])-u)>>63 + (uint64(w[3])-u)>>63)
}

// planMode is how the planners combine a value with the base: 0 the
// value itself (a sole overwrite at alpha 1), 1 delta, 2 overwrite.
func planMode(e entry) int {
	switch {
	case e.sem == adapter.Delta:
		return 1
	case !e.exact():
		return 2
	}
	return 0
}

// blockValues returns entries [b0, b1) of e's values as float32: the
// values themselves when stored so, else widened into s.vals.
func blockValues(e entry, b0, b1 int, s *scratch) []float32 {
	if e.t.ValueDType == tensor.Float32 {
		return tensor.Float32s(e.t.Values)[b0:b1]
	}
	vals := s.vals[:b1-b0]
	widenValues(e.t.ValueDType, vals, e.t.Values, b0, b1)
	return vals
}

// catchUp returns the position of the first element of s at or after a
// that is >= x.
func catchUp(s []uint32, a int, x uint32) int {
	for a < len(s) && s[a] < x {
		a++
	}
	return a
}

// slicesSearch returns the position of the first element of the sorted s
// that is >= x.
func slicesSearch(s []uint32, x uint32) int {
	lo, n := 0, len(s)
	for n > 0 {
		half := n / 2
		if s[lo+half] < x {
			lo += half + 1
			n -= half + 1
		} else {
			n = half
		}
	}
	return lo
}

// qrevert writes the outgoing saved codes back at prevTouched[lo:hi].
func (ws *wstate) qrevert(lo, hi int) {
	q := ws.q
	ws.qwrite(q.prevTouched[lo:hi], q.prevSaved[lo:hi])
}

// qwrite stores codes c at ix.
func (ws *wstate) qwrite(ix []uint32, c []int32) {
	raw := ws.Data
	c = c[:len(ix)]
	if ws.q.lay.shift == 0 {
		for j, i := range ix {
			raw[i] = byte(c[j])
		}
		return
	}
	for j, i := range ix {
		b := raw[2*uint64(i):][:2]
		b[0], b[1] = byte(c[j]), byte(c[j]>>8)
	}
}

// commitChunk moves a quantized weight from the outgoing configuration
// (prevTouched, prevSaved) to the planned codes (touched, codes) over the
// address range of entries [lo, hi) of touched (of prevTouched when the
// weight goes back to its base), in one address-ordered pass with
// prefetching, as switchChunk: a step writes back the outgoing codes up
// to the last index of its new entries, then writes those, so an element
// in both ends up with its new code.
func (ws *wstate) commitChunk(lo, hi int) {
	q := ws.q
	ix, old := q.touched, q.prevTouched
	if len(ix) == 0 {
		ws.qprefetch(old[lo:min(lo+switchBlock, hi)])
		for s := lo; s < hi; s += switchBlock {
			e := min(s+switchBlock, hi)
			ws.qprefetch(old[e:min(e+switchBlock, hi)])
			ws.qrevert(s, e)
		}
		return
	}
	alo, ahi := outgoingRange(ix, old, lo, hi)
	switchSteps(ix, old, lo, hi, alo, ahi,
		func(st switchStep) { ws.qprefetch(old[st.ja:st.ja1]); ws.qprefetch(ix[st.b0:st.b1]) },
		func(st switchStep) {
			ws.qrevert(st.ja, st.ja1)
			if q.commitFused {
				ws.qfused(ws.cur[0], st.b0, st.b1)
			} else {
				ws.qwrite(ix[st.b0:st.b1], q.codes[st.b0:st.b1])
			}
		})
}
