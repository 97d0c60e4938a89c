package patch

import (
	"math"
	"math/bits"
	"unsafe"

	"github.com/shira-ort/shira-ort/internal/prefetch"
	"github.com/shira-ort/shira-ort/internal/quant"
	"github.com/shira-ort/shira-ort/tensor"
)

// nblayout is a MatMulNBits scheme prepared for the inlined kernels
// (planNBChunk, commitNBChunk): the arithmetic of quant.Scheme's Code,
// SetCode, Dequantize and Quantize without the per-call checks. The row
// k = i / N of logical element i is computed with a multiplication
// (exact for 32-bit numerators and divisors 2 ≤ N < 2^32, see qlayout).
type nblayout struct {
	n       uint64 // N
	mN      uint64 // ceil(2^64 / N), 0 when N == 1
	kBlocks uint64
	bsMask  uint64 // block size − 1
	bsLog   uint
	blobLog uint // log2(blob size): block size and bits are powers of two
	bits    uint64
	mask    byte
	scales  []float32
	zps     []uint8   // integer zero points (nil with float zero points)
	fzps    []float32 // float zero points
	fqmax   float64
	// group is N·(8/bits): logical index boundaries that are multiples of
	// it never split the codes of a byte (see addNBChunks).
	group uint64
	// pfShift makes byte offsets fit the prefetch indices (0 unless the
	// storage exceeds 4 GiB, where the prefetches are approximate).
	pfShift uint
}

func newNBLayout(sc *quant.Scheme) nblayout {
	nl := sc.NBitsLayout()
	l := nblayout{n: uint64(nl.N), kBlocks: uint64(nl.KBlocks), bsMask: uint64(nl.BlockSize - 1),
		bsLog: uint(bits.TrailingZeros(uint(nl.BlockSize))), blobLog: uint(bits.TrailingZeros(uint(nl.BlobSize))),
		bits: uint64(nl.Bits), mask: byte(nl.Qmax), scales: nl.Scales, fzps: nl.FloatZeroPoints, fqmax: float64(nl.Qmax)}
	if l.n >= 2 {
		l.mN = math.MaxUint64/l.n + 1
	}
	if nl.ZeroPoints != nil {
		l.zps = make([]uint8, len(nl.ZeroPoints))
		for p, z := range nl.ZeroPoints {
			l.zps[p] = uint8(z) // validated within [0, Qmax]
		}
	}
	l.group = l.n * (8 / l.bits)
	for raw := l.n * l.kBlocks << l.blobLog; (raw-1)>>l.pfShift > math.MaxUint32; {
		l.pfShift++
	}
	return l
}

// loc returns the parameter index, byte offset and bit shift of element i.
func (l *nblayout) loc(i uint32) (p, off uint64, sh uint) {
	k := uint64(i)
	if l.mN != 0 {
		k, _ = bits.Mul64(l.mN, uint64(i))
	}
	col := uint64(i) - k*l.n
	p = col*l.kBlocks + k>>l.bsLog
	bit := (k & l.bsMask) * l.bits
	return p, p<<l.blobLog + bit>>3, uint(bit & 7)
}

// nbprefetch asks for the code bytes, scales and zero points of the
// elements at ix, using s's buffers.
func (ws *wstate) nbprefetch(ix []uint32, s *scratch) {
	if len(ix) == 0 || noPrefetch {
		return
	}
	l := ws.q.nl // a local copy: its fields stay in registers
	s.pfOff, s.pfPar = resize(s.pfOff, len(ix)), resize(s.pfPar, len(ix))
	po, pp := s.pfOff[:len(ix)], s.pfPar[:len(ix)]
	for j, i := range ix {
		p, off, _ := l.loc(i)
		po[j], pp[j] = uint32(off>>l.pfShift), uint32(p)
	}
	prefetch.T2(unsafe.Pointer(unsafe.SliceData(ws.Data)), po, l.pfShift)
	prefetch.T2(unsafe.Pointer(unsafe.SliceData(l.scales)), pp, 2)
	if l.zps != nil {
		prefetch.T2(unsafe.Pointer(unsafe.SliceData(l.zps)), pp, 0)
	} else {
		prefetch.T2(unsafe.Pointer(unsafe.SliceData(l.fzps)), pp, 2)
	}
}

// nbLocs stores the locations of the elements at ix in *buf (byte offset
// << 3 | bit shift, for nbwrite) and asks for their code bytes, and with
// params for their scales and zero points too (a fused commit computes
// their codes).
func (ws *wstate) nbLocs(ix []uint32, buf *[]uint64, pbuf *[]uint32, s *scratch, params bool) {
	l := ws.q.nl // a local copy: its fields stay in registers
	*buf, *pbuf = resize(*buf, len(ix)), resize(*pbuf, len(ix))
	s.pfOff = resize(s.pfOff, len(ix))
	lk, po, pp := (*buf)[:len(ix)], s.pfOff[:len(ix)], (*pbuf)[:len(ix)]
	for j, i := range ix {
		p, off, sh := l.loc(i)
		lk[j], po[j], pp[j] = off<<3|uint64(sh), uint32(off>>l.pfShift), uint32(p)
	}
	if len(ix) == 0 || noPrefetch {
		return
	}
	prefetch.T2(unsafe.Pointer(unsafe.SliceData(ws.Data)), po, l.pfShift)
	if params {
		prefetch.T2(unsafe.Pointer(unsafe.SliceData(l.scales)), pp, 2)
		if l.zps != nil {
			prefetch.T2(unsafe.Pointer(unsafe.SliceData(l.zps)), pp, 0)
		} else {
			prefetch.T2(unsafe.Pointer(unsafe.SliceData(l.fzps)), pp, 2)
		}
	}
}

// planNBChunk is planChunk for a MatMulNBits weight: planQuant for
// entries [lo, hi) of the weight's only planned adapter tensor e, with the
// scheme's arithmetic inlined. It returns the first entry it refuses (a
// non-finite value or result), or -1; it writes nothing to the weight
// (chunks of any size may run in parallel).
func (ws *wstate) planNBChunk(e entry, lo, hi int, s *scratch) int {
	q := ws.q
	l := q.nl // a local copy: its fields stay in registers
	ix := e.t.Indices
	// the cursor over the indices patched now, as in planChunk
	old, saved := q.touched, q.saved
	saved = saved[:len(old)]
	ca := 0
	if len(old) > 0 {
		ca = slicesSearch(old, ix[lo])
	}
	raw := ws.Data
	pBase, pCode := q.pBase, q.pCode
	step := min(switchBlock, blockLen)
	a, mode := e.alpha, planMode(e)
	stoch := q.sc.Rounding == quant.RoundStochastic
	ws.nbprefetch(ix[lo:min(lo+step, hi)], s)
	for b0 := lo; b0 < hi; b0 += step {
		b1 := min(b0+step, hi)
		ws.nbprefetch(ix[b1:min(b1+step, hi)], s)
		blk := ix[b0:b1]
		vals := blockValues(e, b0, b1, s)
		vals = vals[:len(blk)]
		pb, pc := pBase[b0:b1], pCode[b0:b1]
		pb, pc = pb[:len(blk)], pc[:len(blk)]
		for j, i := range blk {
			p, off, sh := l.loc(i)
			if n := behind(old, ca, i); n < qwin {
				ca += n
			} else {
				ca = catchUp(old, ca, i)
			}
			var o int32
			if ca < len(old) && old[ca] == i {
				o = saved[ca]
			} else {
				o = int32(raw[off] >> sh & l.mask)
			}
			v := vals[j]
			if !fin(v) {
				return b0 + j
			}
			c, ok := l.newCode(p, o, v, a, mode, stoch, q.sc, i)
			if !ok {
				return b0 + j
			}
			pb[j], pc[j] = o, c
		}
	}
	return -1
}

// newCode is the code of an entry with value v (combined with the base
// value of code o as mode says: planMode) at parameter p of logical
// element i, and false when the result is not finite: quant.Scheme's
// Dequantize, the float path's arithmetic and Quantize, with the
// parameters at hand. t finite and the scale finite and non-zero make
// t/sc a number, and the clamp is branch-free. An integer zero point is
// added after the rounding, a float one before, as there.
func (l *nblayout) newCode(p uint64, o int32, v, a float32, mode int, stoch bool, sc *quant.Scheme, i uint32) (int32, bool) {
	s := l.scales[p]
	var b float32
	var zp float64
	fz := l.zps == nil
	if fz {
		z := l.fzps[p]
		b = float32(float32(o)-z) * s
		zp = float64(z)
	} else {
		z := int32(l.zps[p])
		b = float32(o-z) * s
		zp = float64(z)
	}
	t := v
	switch mode {
	case 1:
		t = b + float32(a*v)
	case 2:
		t = b + float32(a*(v-b))
	}
	if !fin(t) {
		return 0, false
	}
	x := float64(t / s)
	var r float64
	switch {
	case stoch && fz:
		r = math.Floor(x + zp + quant.Dither(sc.DitherIndex(i)))
	case stoch:
		r = math.Floor(x+quant.Dither(sc.DitherIndex(i))) + zp
	case fz:
		r = math.RoundToEven(x + zp)
	default:
		r = math.RoundToEven(x) + zp
	}
	return int32(max(min(r, l.fqmax), 0)), true
}

// fusable reports whether the codes of e, the weight's only adapter
// tensor, can be computed by the commit itself (commitNBChunk,
// commitChunk) instead of
// a plan before it: float32 values, all finite, and small enough that no
// result can be infinite (|α|·(|v| + the largest base value) ≤ 1e38), so
// the configuration is valid without planning. One sequential pass over
// the values.
func (q *qstate) fusable(e entry) bool {
	if e.t.ValueDType != tensor.Float32 || q.deqBound > 1e37 {
		return false
	}
	a := math.Abs(float64(e.alpha))
	if !(a <= 1e30) { // NaN too
		return false
	}
	for _, v := range tensor.Float32s(e.t.Values) {
		if !fin(v) || a*(math.Abs(float64(v))+q.deqBound) > 1e38 {
			return false
		}
	}
	return true
}

// nbfused is the write of new entries [b0, b1) of touched in a fused
// commit (qstate.commitFused): each one's base code is read from the
// weight (the outgoing codes up to it are already written back), its new
// code computed from e (as planNBChunk would) and written at its location
// lk[j], and both are kept (saved, codes).
func (ws *wstate) nbfused(e entry, b0, b1 int, lk []uint64, par []uint32) {
	q := ws.q
	l := q.nl // a local copy: its fields stay in registers
	raw := ws.Data
	ix := q.touched[b0:b1]
	vals := tensor.Float32s(e.t.Values)[b0:b1]
	saved, codes := q.saved[b0:b1], q.codes[b0:b1]
	lk, par = lk[:len(ix)], par[:len(ix)]
	vals, saved, codes = vals[:len(ix)], saved[:len(ix)], codes[:len(ix)]
	a, mode := e.alpha, planMode(e)
	if q.sc.Rounding == quant.RoundStochastic || l.zps == nil || mode != 0 {
		for j, i := range ix {
			x := lk[j]
			sh := uint(x & 7)
			b := &raw[x>>3]
			o := int32(*b >> sh & l.mask)
			c, _ := l.newCode(uint64(par[j]), o, vals[j], a, mode, q.sc.Rounding == quant.RoundStochastic, q.sc, i) // fusable: finite
			saved[j], codes[j] = o, c
			*b = *b&^(l.mask<<sh) | byte(c)<<sh
		}
		return
	}
	// the common case inlined: a sole overwrite at α 1 with integer zero
	// points, rounded to nearest (newCode's arithmetic for mode 0)
	scales, zps, mask, fqmax := l.scales, l.zps, l.mask, l.fqmax
	for j := range ix {
		x := lk[j]
		sh := uint(x & 7)
		b := &raw[x>>3]
		o := int32(*b >> sh & mask)
		p := par[j]
		r := math.RoundToEven(float64(vals[j]/scales[p])) + float64(zps[p])
		c := int32(max(min(r, fqmax), 0))
		saved[j], codes[j] = o, c
		*b = *b&^(mask<<sh) | byte(c)<<sh
	}
}

// nbwrite stores codes c at the locations lk (from nbLocs), changing
// only their own bits.
func (ws *wstate) nbwrite(lk []uint64, c []int32) {
	mask := ws.q.nl.mask
	raw := ws.Data
	c = c[:len(lk)]
	for j, x := range lk {
		sh := uint(x & 7)
		b := &raw[x>>3]
		*b = *b&^(mask<<sh) | byte(c[j])<<sh
	}
}

// addNBChunks appends the entries ix of MatMulNBits weight wi as
// commit tasks of about chunkEntries entries each, every boundary at a
// logical index that is a multiple of l.group: the codes that share a
// byte (same column, block and group of 8/bits rows) have indices in one
// such range, so the chunks write disjoint bytes and run in parallel.
func addNBChunks(ts []task, wi int, ix []uint32, l *nblayout) []task {
	n := len(ix)
	for lo := 0; lo < n; {
		hi := min(lo+chunkEntries, n)
		if hi < n {
			// extend to the next group boundary after ix[hi-1]
			g := (uint64(ix[hi-1])/l.group + 1) * l.group
			if g > math.MaxUint32 {
				hi = n
			} else {
				hi += slicesSearch(ix[hi:], uint32(g))
			}
		}
		ts = append(ts, task{w: wi, lo: lo, hi: hi, kind: quantTask})
		lo = hi
	}
	return ts
}

// groupStart returns the first index of the chunk starting at entry lo of
// ix (0 for the first chunk): ix[lo] rounded down to a group boundary.
func (l *nblayout) groupStart(ix []uint32, lo int) uint32 {
	if lo == 0 {
		return 0
	}
	i := uint64(ix[lo])
	return uint32(i - i%l.group)
}

// commitNBChunk is commitChunk for a MatMulNBits weight, over the chunk of
// entries [lo, hi) of touched (of prevTouched when the weight goes back to
// its base) that addNBChunks made: the outgoing entries in the chunk's
// index range are those between its group boundaries, so every byte the
// chunk writes is written by it alone. In steps, it writes back the
// outgoing codes up to the last index of the step's new entries, then
// writes those (read-modify-write of their bits), so an element in both
// ends up with its new code and every other bit is left as it was.
func (ws *wstate) commitNBChunk(lo, hi int, s *scratch) {
	q := ws.q
	l := &q.nl
	ix, old := q.touched, q.prevTouched
	saved := q.prevSaved[:len(old)]
	cur, next := 0, 1 // halves of s.nbLoc: outgoing at 2h, new at 2h+1
	if len(ix) == 0 {
		ws.nbLocs(old[lo:min(lo+switchBlock, hi)], &s.nbLoc[2*cur], &s.nbPar[2*cur], s, false)
		for b := lo; b < hi; b += switchBlock {
			e := min(b+switchBlock, hi)
			ws.nbLocs(old[e:min(e+switchBlock, hi)], &s.nbLoc[2*next], &s.nbPar[2*next], s, false)
			ws.nbwrite(s.nbLoc[2*cur], saved[b:e])
			cur, next = next, cur
		}
		return
	}
	alo, ahi := 0, len(old)
	if lo > 0 {
		alo = slicesSearch(old, l.groupStart(ix, lo))
	}
	if hi < len(ix) {
		ahi = alo + slicesSearch(old[alo:], l.groupStart(ix, hi))
	}
	// the prefetch of step k fills half k%2 of s.nbLoc, which step k writes from
	pf, do := 0, 0
	switchSteps(ix, old, lo, hi, alo, ahi,
		func(st switchStep) {
			ws.nbLocs(old[st.ja:st.ja1], &s.nbLoc[2*(pf%2)], &s.nbPar[2*(pf%2)], s, false)
			ws.nbLocs(ix[st.b0:st.b1], &s.nbLoc[2*(pf%2)+1], &s.nbPar[2*(pf%2)+1], s, q.commitFused)
			pf++
		},
		func(st switchStep) {
			ws.nbwrite(s.nbLoc[2*(do%2)], saved[st.ja:st.ja1])
			if q.commitFused {
				ws.nbfused(ws.cur[0], st.b0, st.b1, s.nbLoc[2*(do%2)+1], s.nbPar[2*(do%2)+1])
			} else {
				ws.nbwrite(s.nbLoc[2*(do%2)+1], q.codes[st.b0:st.b1])
			}
			do++
		})
}
