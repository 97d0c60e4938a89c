package patch

import (
	"math"
	"math/bits"
	"unsafe"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/prefetch"
	"github.com/shira-ort/shira-ort/tensor"
)

// The kernels keep random accesses to the (large, uncached) weight in
// tight, branch-free loops so the CPU keeps many cache misses in flight:
//
//   - the verbatim scatter (one overwrite adapter at alpha 1, same dtype)
//     and the fp32 arithmetic path save the original and write the new
//     value in one loop, touching each cache line of the weight once;
//   - every other single-adapter path works in blocks of blockLen entries:
//     gather the originals (tight loop, misses overlap), convert and
//     combine in float32 over the block (sequential, in L1), then scatter
//     the rounded results while the lines are still in L2;
//   - several adapters on one weight are merged through a bitmap of the
//     union (see applyMerged);
//   - a switch to a single adapter tensor interleaves the revert of the
//     old configuration and the apply of the new one in address order
//     (see switchChunk), so a line both touch is fetched once;
//   - passes over a weight go in steps of switchBlock entries, the lines
//     of the next step prefetched (PREFETCHT2, package internal/prefetch) before
//     the current one runs: the scatter loops alone keep too few misses
//     in flight.
//
// fp16 is widened through package tensor's 64 Ki-entry table (convert.go)
// and narrowed a block at a time by tensor.Float32sToFloat16 (scatter).

// blockLen is the number of entries processed per block (its lines,
// 64 KiB at one line per entry, stay in L2 between the passes).
const blockLen = 1024

// chunkEntries is the size of the pieces a big single-adapter tensor is
// split into so that several workers share it. A variable for tests.
var chunkEntries = 1 << 15

// scratch is one worker's reusable buffers.
type scratch struct {
	base, vals, acc [blockLen]float32
	half            [blockLen]uint16 // a block narrowed to fp16 before its scatter
	hits            [blockLen]uint8  // contributors per union position (saturating at 2)
	bitmap          []uint64         // union bitmap over a weight's flat indices
	rank            []uint32         // set bits before each bitmap word
	cursor          []int            // per adapter tensor: next entry to merge
	pfOff, pfPar    []uint32         // nbprefetch: byte offsets and parameter indices to prefetch
	nbLoc           [4][]uint64      // commitNBChunk: byte offset<<3 | bit shift of the steps' outgoing and new entries, double-buffered
	nbPar           [4][]uint32      // commitNBChunk: the parameter indices of those entries
}

// revertPrev writes the outgoing configuration's saved originals back at
// its touched entries [lo, hi).
func (ws *wstate) revertPrev(lo, hi int) {
	ix := ws.prevTouched[lo:hi]
	if ws.storeSize() == 4 {
		wb, saved := tensor.Uint32s(ws.Data), ws.prev32[lo:hi]
		saved = saved[:len(ix)]
		for j, i := range ix {
			wb[i] = saved[j]
		}
		return
	}
	wb, saved := tensor.Uint16s(ws.Data), ws.prev16[lo:hi]
	saved = saved[:len(ix)]
	for j, i := range ix {
		wb[i] = saved[j]
	}
}

// switchBlock is the number of entries a stepped pass (switchChunk,
// revertRange, applyRange) handles per step, and so the prefetch
// distance: before a step, the weight lines of the next step's entries
// are prefetched (prefetch.T2), so the misses of two steps overlap instead
// of the few the out-of-order window of a scatter loop keeps in flight.
// Measured on the project machine (Zen 4, 2 workers, d=4096 fp32 at 1 %,
// cold): 64 to 256 within a few per cent of each other, no prefetch
// (the old 2048-entry steps) 2-3 times slower. A variable for tests.
var switchBlock = 128

// noPrefetch turns prefetching off (with switchBlock = 2048, the kernel
// before prefetching, which the benchmarks compare against).
var noPrefetch = false

// prefetch asks for the weight lines of the entries at ix (see
// prefetch.T2; a no-op where it is not implemented).
func (ws *wstate) prefetch(ix []uint32) {
	if len(ix) == 0 || noPrefetch {
		return
	}
	shift := uint(1)
	if ws.storeSize() == 4 {
		shift = 2
	}
	prefetch.T2(unsafe.Pointer(unsafe.SliceData(ws.Data)), ix, shift)
}

// revertRange is revertPrev(lo, hi) in steps, prefetching a step ahead.
func (ws *wstate) revertRange(lo, hi int) {
	ix := ws.prevTouched
	ws.prefetch(ix[lo:min(lo+switchBlock, hi)])
	for s := lo; s < hi; s += switchBlock {
		e := min(s+switchBlock, hi)
		ws.prefetch(ix[e:min(e+switchBlock, hi)])
		ws.revertPrev(s, e)
	}
}

// applyRange is applySingle(e, lo, hi, s) in steps, prefetching a step
// ahead.
func (ws *wstate) applyRange(e entry, lo, hi int, s *scratch) {
	ix := e.t.Indices
	ws.prefetch(ix[lo:min(lo+switchBlock, hi)])
	for b := lo; b < hi; b += switchBlock {
		f := min(b+switchBlock, hi)
		ws.prefetch(ix[f:min(f+switchBlock, hi)])
		ws.applySingle(e, b, f, s)
	}
}

// switchChunk moves the address range covered by entries [lo, hi) of the
// weight's only adapter tensor from the outgoing configuration (prev*) to
// the new one. The range starts after entry lo-1 (at 0 for the first
// chunk) and ends at entry hi-1 (at the end of the weight for the last),
// so chunks cover disjoint parts of the weight and run in parallel.
//
// Within the range it alternates, step by step in address order: write
// back the outgoing originals up to the last index of the next
// switchBlock new entries, then apply those entries. The apply reads the
// freshly reverted, i.e. base, values, so an element in both
// configurations saves its base value (not the outgoing one) and gets
// exactly what a revert followed by an apply would give; but its cache
// line is still in L1/L2 from the revert, so each line of the union is
// fetched from memory once instead of once per configuration. Elements in
// both are written twice, both times in cache; a per-element merge that
// writes them once would need a data-dependent branch per element, which
// costs more than the second write. Before a step, the lines of the next
// one (outgoing and new entries) are prefetched.
func (ws *wstate) switchChunk(lo, hi int, s *scratch) {
	e := ws.cur[0]
	ix, old := e.t.Indices, ws.prevTouched
	alo, ahi := outgoingRange(ix, old, lo, hi)
	switchSteps(ix, old, lo, hi, alo, ahi,
		func(st switchStep) { ws.prefetch(old[st.ja:st.ja1]); ws.prefetch(ix[st.b0:st.b1]) },
		func(st switchStep) { ws.revertPrev(st.ja, st.ja1); ws.applySingle(e, st.b0, st.b1, s) })
}

// outgoingRange returns the outgoing entries [alo, ahi) of old in the
// address range of new entries [lo, hi) of ix: after ix[lo-1] (from the
// start for lo = 0) up to ix[hi-1] (to the end for the last chunk), so
// the chunks of a switch cover disjoint parts of the weight.
func outgoingRange(ix, old []uint32, lo, hi int) (alo, ahi int) {
	alo, ahi = 0, len(old)
	if lo > 0 {
		alo = upperBound(old, ix[lo-1])
	}
	if hi < len(ix) {
		ahi = alo + upperBound(old[alo:], ix[hi-1])
	}
	return alo, ahi
}

// switchStep is one step of a one-pass switch: new entries [b0, b1) and
// the outgoing entries [ja, ja1) up to the last of them.
type switchStep struct{ ja, ja1, b0, b1 int }

// switchSteps walks new entries [lo, hi) of ix in steps of switchBlock
// with the outgoing entries [alo, ahi) of old in the same address range
// (the last step takes the rest of them): prefetch for the first step,
// then for each step prefetch for the next one (so two steps' misses
// overlap) and do for the step itself.
func switchSteps(ix, old []uint32, lo, hi, alo, ahi int, prefetch, do func(switchStep)) {
	end := func(ja, b1 int) int {
		if b1 >= hi {
			return ahi
		}
		return ja + upperBound(old[ja:ahi], ix[b1-1])
	}
	b1 := min(lo+switchBlock, hi)
	cur := switchStep{alo, end(alo, b1), lo, b1}
	prefetch(cur)
	for {
		more := cur.b1 < hi
		var next switchStep
		if more {
			b2 := min(cur.b1+switchBlock, hi)
			next = switchStep{cur.ja1, end(cur.ja1, b2), cur.b1, b2}
			prefetch(next)
		}
		do(cur)
		if !more {
			return
		}
		cur = next
	}
}

// upperBound returns the number of elements of the sorted s that are <= x.
func upperBound(s []uint32, x uint32) int {
	lo, n := 0, len(s)
	for n > 0 {
		half := n / 2
		if s[lo+half] <= x {
			lo += half + 1
			n -= half + 1
		} else {
			n = half
		}
	}
	return lo
}

// prepare sizes the saved buffer for n entries.
func (ws *wstate) prepare(n int) {
	if ws.storeSize() == 4 {
		ws.saved32 = resize(ws.saved32, n)
	} else {
		ws.saved16 = resize(ws.saved16, n)
	}
}

func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n, n+n/8)
	}
	return s[:n]
}

// exact reports whether e writes its values verbatim (the paper's scatter).
func (e entry) exact() bool { return e.sem == adapter.Overwrite && e.alpha == 1 }

// applySingle applies entries [lo, hi) of the only adapter tensor on the
// weight (which holds base values there): it records the originals in the
// saved buffer (sized by prepare; touched aliases the tensor's indices)
// and writes the new values.
func (ws *wstate) applySingle(e entry, lo, hi int, s *scratch) {
	ix, vdt := e.t.Indices[lo:hi], e.t.ValueDType
	switch {
	case e.exact() && vdt == ws.DType && vdt.Size() == 4:
		wb, vb, saved := tensor.Uint32s(ws.Data), tensor.Uint32s(e.t.Values)[lo:hi], ws.saved32[lo:hi]
		vb, saved = vb[:len(ix)], saved[:len(ix)]
		for j, i := range ix {
			saved[j] = wb[i]
			wb[i] = vb[j]
		}
	case e.exact() && vdt == ws.DType && ws.Widened: // the values widened verbatim
		wb, vb, saved := tensor.Float32s(ws.Data), tensor.Uint16s(e.t.Values)[lo:hi], ws.saved32[lo:hi]
		vb, saved = vb[:len(ix)], saved[:len(ix)]
		for j, i := range ix {
			saved[j] = math.Float32bits(wb[i])
			wb[i] = half(vdt, vb[j])
		}
	case e.exact() && vdt == ws.DType:
		wb, vb, saved := tensor.Uint16s(ws.Data), tensor.Uint16s(e.t.Values)[lo:hi], ws.saved16[lo:hi]
		vb, saved = vb[:len(ix)], saved[:len(ix)]
		for j, i := range ix {
			saved[j] = wb[i]
			wb[i] = vb[j]
		}
	case ws.DType == tensor.Float32 && vdt == tensor.Float32:
		w, v := tensor.Float32s(ws.Data), tensor.Float32s(e.t.Values)[lo:hi]
		saved := tensor.Float32s(tensor.Bytes(ws.saved32))[lo:hi]
		v, saved = v[:len(ix)], saved[:len(ix)]
		a := e.alpha
		if e.sem == adapter.Delta {
			for j, i := range ix {
				b := w[i]
				saved[j] = b
				w[i] = b + float32(a*v[j])
			}
		} else {
			for j, i := range ix {
				b := w[i]
				saved[j] = b
				w[i] = b + float32(a*(v[j]-b))
			}
		}
	default:
		for b0 := 0; b0 < len(ix); b0 += blockLen {
			b1 := min(b0+blockLen, len(ix))
			blk := ix[b0:b1]
			ws.gather(blk, lo+b0)
			vals := s.vals[:len(blk)]
			widenValues(vdt, vals, e.t.Values, lo+b0, lo+b1)
			if !e.exact() {
				base := s.base[:len(blk)]
				ws.widenSaved(base, lo+b0, lo+b1)
				combineBlock(vals, base, e)
			}
			ws.scatter(blk, vals, s.half[:])
		}
	}
}

// gather copies the weight's bits at ix into the saved buffer at off.
func (ws *wstate) gather(ix []uint32, off int) {
	if ws.storeSize() == 4 {
		wb, saved := tensor.Uint32s(ws.Data), ws.saved32[off:]
		saved = saved[:len(ix)]
		for j, i := range ix {
			saved[j] = wb[i]
		}
		return
	}
	wb, saved := tensor.Uint16s(ws.Data), ws.saved16[off:]
	saved = saved[:len(ix)]
	for j, i := range ix {
		saved[j] = wb[i]
	}
}

// widenSaved converts saved[lo:hi] to float32 into dst.
func (ws *wstate) widenSaved(dst []float32, lo, hi int) {
	if ws.storeSize() == 4 {
		copy(dst, tensor.Float32s(tensor.Bytes(ws.saved32[lo:hi])))
		return
	}
	widen16(ws.DType, dst, ws.saved16[lo:hi])
}

// combineBlock turns values v into results: b + float32(alpha*d) with
// d = v - b (overwrite) or v (delta). The product is rounded explicitly.
func combineBlock(v, base []float32, e entry) {
	a := e.alpha
	base = base[:len(v)]
	if e.sem == adapter.Delta {
		for j, x := range v {
			v[j] = base[j] + float32(a*x)
		}
		return
	}
	for j, x := range v {
		b := base[j]
		v[j] = b + float32(a*(x-b))
	}
}

// scatter rounds f to the weight dtype (nearest even) and writes it at ix
// (widened again for a Widened weight); half is scratch for narrowing fp16
// (at least len(ix) long).
func (ws *wstate) scatter(ix []uint32, f []float32, half []uint16) {
	f = f[:len(ix)]
	switch {
	case ws.Widened && ws.DType == tensor.Float16:
		w, h, tab := tensor.Float32s(ws.Data), half[:len(ix)], tensor.Float16Table()
		tensor.Float32sToFloat16(h, f)
		for j, i := range ix {
			w[i] = tab[h[j]]
		}
		return
	case ws.Widened:
		w := tensor.Float32s(ws.Data)
		for j, i := range ix {
			w[i] = tensor.BFloat16ToFloat32(tensor.Float32ToBFloat16(f[j]))
		}
		return
	}
	switch ws.DType {
	case tensor.Float32:
		w := tensor.Float32s(ws.Data)
		for j, i := range ix {
			w[i] = f[j]
		}
	case tensor.Float16:
		// narrow the block sequentially (in L1), then scatter the bits
		w, h := tensor.Uint16s(ws.Data), half[:len(ix)]
		tensor.Float32sToFloat16(h, f)
		for j, i := range ix {
			w[i] = h[j]
		}
	default:
		w := tensor.Uint16s(ws.Data)
		for j, i := range ix {
			w[i] = tensor.Float32ToBFloat16(f[j])
		}
	}
}

// applyMerged applies several adapter tensors to one weight (holding base
// values). It marks every index in a bitmap and reads the sorted union off
// it, with per-word ranks so an index's union position is a rank plus a
// popcount. Then, block by block over the union (so each cache line of the
// weight is fetched once and stays in L2 until written): gather the
// originals, accumulate every configuration in order in float32, round,
// let sole exact (scatter) contributors keep their values verbatim, and
// scatter.
func (ws *wstate) applyMerged(s *scratch) {
	words := (ws.numel + 63) / 64
	s.bitmap = resize(s.bitmap, words)
	s.rank = resize(s.rank, words)
	bm, rank := s.bitmap, s.rank
	clear(bm)
	total := 0
	for _, e := range ws.cur {
		for _, i := range e.t.Indices {
			bm[i>>6] |= 1 << (i & 63)
		}
		total += len(e.t.Indices)
	}
	tch := resize(ws.union, total)[:0]
	for w, word := range bm {
		rank[w] = uint32(len(tch))
		for word != 0 {
			tch = append(tch, uint32(w<<6+bits.TrailingZeros64(word)))
			word &= word - 1
		}
	}
	ws.union, ws.touched = tch, tch
	n := len(tch)
	ws.prepare(n)
	s.cursor = resize(s.cursor, len(ws.cur))
	cur := s.cursor
	clear(cur)
	for u0 := 0; u0 < n; u0 += blockLen {
		u1 := min(u0+blockLen, n)
		blk := tch[u0:u1]
		last := blk[len(blk)-1]
		ws.gather(blk, u0)
		base, acc, hits := s.base[:len(blk)], s.acc[:len(blk)], s.hits[:len(blk)]
		ws.widenSaved(base, u0, u1)
		copy(acc, base)
		clear(hits)
		for k, e := range ws.cur {
			ix := e.t.Indices
			j0 := cur[k]
			j1 := j0
			for j1 < len(ix) && ix[j1] <= last {
				j1++
			}
			vals := s.vals[:j1-j0]
			widenValues(e.t.ValueDType, vals, e.t.Values, j0, j1)
			a, over := e.alpha, e.sem == adapter.Overwrite
			for j, i := range ix[j0:j1] {
				u := rank[i>>6] + uint32(bits.OnesCount64(bm[i>>6]&(1<<(i&63)-1))) - uint32(u0)
				d := vals[j]
				if over {
					d -= base[u]
				}
				acc[u] += float32(a * d)
				if hits[u] < 2 {
					hits[u]++
				}
			}
		}
		ws.scatter(blk, acc, s.half[:])
		for k, e := range ws.cur {
			j0, j1 := cur[k], cur[k]
			for j1 < len(e.t.Indices) && e.t.Indices[j1] <= last {
				j1++
			}
			cur[k] = j1
			if e.exact() {
				ws.writeSole(e, j0, j1, bm, rank, hits, u0)
			}
		}
	}
}

// writeSole writes entries [j0, j1) of e verbatim (converted to the weight
// dtype) wherever e is the only contributor; hits covers the union block
// starting at u0.
func (ws *wstate) writeSole(e entry, j0, j1 int, bm []uint64, rank []uint32, hits []uint8, u0 int) {
	sole := func(i uint32) bool {
		return hits[rank[i>>6]+uint32(bits.OnesCount64(bm[i>>6]&(1<<(i&63)-1)))-uint32(u0)] == 1
	}
	ix := e.t.Indices[j0:j1]
	switch {
	case e.t.ValueDType == ws.DType && ws.DType.Size() == 4:
		wb, vb := tensor.Uint32s(ws.Data), tensor.Uint32s(e.t.Values)[j0:j1]
		vb = vb[:len(ix)]
		for j, i := range ix {
			if sole(i) {
				wb[i] = vb[j]
			}
		}
	case e.t.ValueDType == ws.DType && ws.Widened:
		wb, vb := tensor.Float32s(ws.Data), tensor.Uint16s(e.t.Values)[j0:j1]
		vb = vb[:len(ix)]
		for j, i := range ix {
			if sole(i) {
				wb[i] = half(ws.DType, vb[j])
			}
		}
	case e.t.ValueDType == ws.DType:
		wb, vb := tensor.Uint16s(ws.Data), tensor.Uint16s(e.t.Values)[j0:j1]
		vb = vb[:len(ix)]
		for j, i := range ix {
			if sole(i) {
				wb[i] = vb[j]
			}
		}
	default:
		var one [1]float32
		var half [1]uint16
		for j, i := range ix {
			if sole(i) {
				widenValues(e.t.ValueDType, one[:], e.t.Values, j0+j, j0+j+1)
				ws.scatter(ix[j:j+1], one[:], half[:])
			}
		}
	}
}
