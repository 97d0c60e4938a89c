package patch

import (
	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/tensor"
)

// The kernels work in passes that keep random accesses to the (large,
// uncached) weight in tight loops: gather the originals at the touched
// indices into ws.saved*, compute from the saved copy sequentially, then
// scatter the results. Loops that load a weight element and then branch
// (fp16 conversion, merging) would otherwise stall on one cache miss at a
// time.

// revert writes the saved originals back and forgets them.
func (ws *wstate) revert() {
	if ws.DType.Size() == 4 {
		wb := tensor.Uint32s(ws.Data)
		saved := ws.saved32[:len(ws.touched)]
		for j, i := range ws.touched {
			wb[i] = saved[j]
		}
	} else {
		wb := tensor.Uint16s(ws.Data)
		saved := ws.saved16[:len(ws.touched)]
		for j, i := range ws.touched {
			wb[i] = saved[j]
		}
	}
	ws.touched = ws.touched[:0]
}

// apply writes ws.cur into the weight, which must hold its base values
// (nothing touched), saving the originals at the touched indices first.
func (ws *wstate) apply() {
	switch len(ws.cur) {
	case 0:
		return
	case 1:
		ws.touched = append(ws.touched[:0], ws.cur[0].t.Indices...)
		ws.saveTouched()
		ws.applySingle(ws.cur[0])
	default:
		ws.union()
		ws.saveTouched()
		ws.applyMerged()
	}
}

// saveTouched copies the current bits at ws.touched into the saved buffer.
func (ws *wstate) saveTouched() {
	n := len(ws.touched)
	if ws.DType.Size() == 4 {
		ws.saved32 = resize(ws.saved32, n)
		wb, saved := tensor.Uint32s(ws.Data), ws.saved32
		for j, i := range ws.touched {
			saved[j] = wb[i]
		}
	} else {
		ws.saved16 = resize(ws.saved16, n)
		wb, saved := tensor.Uint16s(ws.Data), ws.saved16
		for j, i := range ws.touched {
			saved[j] = wb[i]
		}
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

// applySingle handles one adapter tensor on a weight; ws.touched equals
// its indices and ws.saved* holds the base values there.
func (ws *wstate) applySingle(e entry) {
	ix, vdt := e.t.Indices, e.t.ValueDType
	if e.exact() {
		ws.writeExact(e, nil)
		return
	}
	a := e.alpha
	switch {
	case ws.DType == tensor.Float32 && vdt == tensor.Float32: // fp32 fast paths
		w, v := tensor.Float32s(ws.Data), tensor.Float32s(e.t.Values)[:len(ix)]
		base := tensor.Float32s(tensor.Bytes(ws.saved32))[:len(ix)]
		if e.sem == adapter.Delta {
			for j, i := range ix {
				w[i] = base[j] + float32(a*v[j])
			}
		} else {
			for j, i := range ix {
				b := base[j]
				w[i] = b + float32(a*(v[j]-b))
			}
		}
	case ws.DType == tensor.Float16 && vdt == tensor.Float16 && e.sem == adapter.Delta:
		w, v, base := tensor.Uint16s(ws.Data), tensor.Uint16s(e.t.Values)[:len(ix)], ws.saved16[:len(ix)]
		for j, i := range ix {
			w[i] = tensor.Float32ToFloat16(tensor.Float16ToFloat32(base[j]) + float32(a*tensor.Float16ToFloat32(v[j])))
		}
	case ws.DType == tensor.BFloat16 && vdt == tensor.BFloat16 && e.sem == adapter.Delta:
		w, v, base := tensor.Uint16s(ws.Data), tensor.Uint16s(e.t.Values)[:len(ix)], ws.saved16[:len(ix)]
		for j, i := range ix {
			w[i] = tensor.Float32ToBFloat16(tensor.BFloat16ToFloat32(base[j]) + float32(a*tensor.BFloat16ToFloat32(v[j])))
		}
	default: // any dtype combination, one element at a time
		wv, vv, sv := ws.view(), newView(vdt, e.t.Values), ws.savedView()
		for j, i := range ix {
			b := sv.load(uint32(j))
			wv.store(i, combine(b, b, e, vv.load(uint32(j))))
		}
	}
}

// writeExact writes e's values verbatim at its indices (converted to the
// weight dtype when the value dtype differs). With hits != nil only where
// the union position's hit count is 1 (e is the sole contributor).
func (ws *wstate) writeExact(e entry, hits []uint8) {
	ix := e.t.Indices
	var pos []int32
	if hits != nil {
		pos = ws.positions(ix)
	}
	sole := func(j int) bool { return hits == nil || hits[pos[j]] == 1 }
	switch {
	case e.t.ValueDType == ws.DType && ws.DType.Size() == 4:
		wb, vb := tensor.Uint32s(ws.Data), tensor.Uint32s(e.t.Values)[:len(ix)]
		if hits == nil {
			for j, i := range ix {
				wb[i] = vb[j]
			}
			return
		}
		for j, i := range ix {
			if sole(j) {
				wb[i] = vb[j]
			}
		}
	case e.t.ValueDType == ws.DType:
		wb, vb := tensor.Uint16s(ws.Data), tensor.Uint16s(e.t.Values)[:len(ix)]
		for j, i := range ix {
			if sole(j) {
				wb[i] = vb[j]
			}
		}
	default:
		wv, vv := ws.view(), newView(e.t.ValueDType, e.t.Values)
		for j, i := range ix {
			if sole(j) {
				wv.store(i, vv.load(uint32(j)))
			}
		}
	}
}

// positions maps each of ix (a sorted subset of ws.touched) to its
// position in ws.touched, in ws.pos (reused).
func (ws *wstate) positions(ix []uint32) []int32 {
	ws.pos = resize(ws.pos, len(ix))
	u, p := 0, ws.pos
	for j, i := range ix {
		for ws.touched[u] != i {
			u++
		}
		p[j] = int32(u)
	}
	return p
}

// combine adds one configuration's contribution to acc for an entry with
// base b and value v: acc + float32(alpha*d), d = v-b (overwrite) or v.
func combine(acc, b float32, e entry, v float32) float32 {
	d := v
	if e.sem == adapter.Overwrite {
		d = v - b
	}
	return acc + float32(e.alpha*d)
}

// union merges the sorted index lists of ws.cur into ws.touched.
func (ws *wstate) union() {
	es := ws.cur
	ws.heads = resize(ws.heads, len(es))
	heads := ws.heads
	clear(heads)
	out := ws.touched[:0]
	for {
		var m uint32
		found := false
		for k, e := range es {
			if h := heads[k]; h < len(e.t.Indices) && (!found || e.t.Indices[h] < m) {
				m, found = e.t.Indices[h], true
			}
		}
		if !found {
			break
		}
		out = append(out, m)
		for k, e := range es {
			if h := heads[k]; h < len(e.t.Indices) && e.t.Indices[h] == m {
				heads[k] = h + 1
			}
		}
	}
	ws.touched = out
}

// applyMerged handles several adapter tensors on one weight: accumulate
// every configuration in order into a float32 buffer over the union,
// round and scatter, then let sole exact (scatter) contributors write
// their values verbatim.
func (ws *wstate) applyMerged() {
	n := len(ws.touched)
	ws.acc = resize(ws.acc, n)
	ws.hits = resize(ws.hits, n)
	acc, hits := ws.acc, ws.hits
	clear(hits)
	sv := ws.savedView()
	for j := range acc {
		acc[j] = sv.load(uint32(j))
	}
	for _, e := range ws.cur {
		vv := newView(e.t.ValueDType, e.t.Values)
		pos := ws.positions(e.t.Indices)
		for j, u := range pos {
			b := sv.load(uint32(u))
			acc[u] = combine(acc[u], b, e, vv.load(uint32(j)))
			if hits[u] < 2 {
				hits[u]++
			}
		}
	}
	wv := ws.view()
	for j, i := range ws.touched {
		wv.store(i, acc[j])
	}
	for _, e := range ws.cur {
		if e.exact() {
			ws.writeExact(e, hits)
		}
	}
}

// view reads and writes elements of a float buffer as float32.
type view struct {
	dt  tensor.DType
	f32 []float32
	u16 []uint16
}

func newView(dt tensor.DType, b []byte) view {
	v := view{dt: dt}
	if dt.Size() == 4 {
		v.f32 = tensor.Float32s(b)
	} else {
		v.u16 = tensor.Uint16s(b)
	}
	return v
}

func (ws *wstate) view() view { return newView(ws.DType, ws.Data) }

func (ws *wstate) savedView() view {
	if ws.DType.Size() == 4 {
		return view{dt: ws.DType, f32: tensor.Float32s(tensor.Bytes(ws.saved32))}
	}
	return view{dt: ws.DType, u16: ws.saved16}
}

func (v *view) load(i uint32) float32 {
	switch v.dt {
	case tensor.Float32:
		return v.f32[i]
	case tensor.Float16:
		return tensor.Float16ToFloat32(v.u16[i])
	default:
		return tensor.BFloat16ToFloat32(v.u16[i])
	}
}

// store rounds f to the view's dtype (nearest even) and writes it.
func (v *view) store(i uint32, f float32) {
	switch v.dt {
	case tensor.Float32:
		v.f32[i] = f
	case tensor.Float16:
		v.u16[i] = tensor.Float32ToFloat16(f)
	default:
		v.u16[i] = tensor.Float32ToBFloat16(f)
	}
}
