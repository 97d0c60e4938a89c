package patch

import (
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/closest"
	"github.com/shira-ort/shira-ort/tensor"
)

// ErrNonFinite reports a configuration that would turn a finite weight
// entry into NaN or an infinity (WithFiniteCheck): a NaN value, a huge
// alpha, a sum beyond the weight dtype's range. For a quantized weight
// (Weight.Quant) it is reported whether or not WithFiniteCheck is given,
// for any NaN or infinite adapter value or float result (before
// quantization): a code cannot hold it.
var ErrNonFinite = errors.New("patch: non-finite result")

// WithFiniteCheck makes Set, Apply and FuseInto compute every entry a
// configuration writes before writing any, and refuse it (ErrNonFinite,
// nothing written) when a finite base value would become NaN or infinite
// after rounding to the weight's dtype, as PEFT's safe_merge refuses a
// merge with NaNs. Entries that were already non-finite in the base weight
// are not reported. It costs one more pass over the configuration's
// entries per switch. Quantized weights are always checked (see
// ErrNonFinite); the option changes nothing for them.
func WithFiniteCheck() Option { return func(o *options) { o.finite = true } }

// checkFinite computes what the planned configuration writes into each
// weight whose entries change and reports the first finite base value it
// would make non-finite. It writes nothing.
func (p *Patcher) checkFinite() error {
	for wi := range p.weights {
		ws := &p.weights[wi]
		if len(ws.next) == 0 || ws.q != nil { // quantized: always checked by planQuant
			continue
		}
		if err := ws.checkFinite(); err != nil {
			return fmt.Errorf("weight %s: %w", closest.Quote(ws.Name), err)
		}
	}
	return nil
}

// base returns the weight's base value at flat index i as float32: the
// saved original when the active configuration touches i, else the
// current (unpatched) value. pos is a cursor into touched for increasing
// i (merge walk); it is advanced and returned.
func (ws *wstate) base(i uint32, pos int) (float32, int) {
	for pos < len(ws.touched) && ws.touched[pos] < i {
		pos++
	}
	if pos < len(ws.touched) && ws.touched[pos] == i {
		if ws.storeSize() == 4 {
			return math.Float32frombits(ws.saved32[pos]), pos
		}
		return half(ws.DType, ws.saved16[pos]), pos
	}
	if ws.storeSize() == 4 {
		return tensor.Float32s(ws.Data)[i], pos
	}
	return half(ws.DType, tensor.Uint16s(ws.Data)[i]), pos
}

func half(dt tensor.DType, h uint16) float32 {
	if dt == tensor.Float16 {
		return tensor.Float16Table()[h]
	}
	return tensor.BFloat16ToFloat32(h)
}

// value returns entry k of t's values as float32 (a code as the number it
// is: the quantized planner dequantizes codes itself).
func value(t *adapter.Tensor, k int) float32 {
	switch {
	case t.ValueDType == tensor.Float32:
		return tensor.Float32s(t.Values)[k]
	case t.CodeValues():
		return float32(t.Code(k))
	default:
		return half(t.ValueDType, tensor.Uint16s(t.Values)[k])
	}
}

// rounded reports whether f, rounded to dt, is finite.
func rounded(dt tensor.DType, f float32) bool {
	switch dt {
	case tensor.Float16:
		return tensor.Float32ToFloat16(f)&0x7c00 != 0x7c00
	case tensor.BFloat16:
		return tensor.Float32ToBFloat16(f)&0x7f80 != 0x7f80
	}
	return !math.IsNaN(float64(f)) && !math.IsInf(float64(f), 0)
}

func finite(f float32) bool { return !math.IsNaN(float64(f)) && !math.IsInf(float64(f), 0) }

// checkFinite checks the weight's planned entries (next) with the same
// arithmetic as the kernels: a sole exact overwrite writes v; otherwise
// acc = b, then acc += float32(alpha*d) per entry, d = v - b (overwrite)
// or v (delta).
func (ws *wstate) checkFinite() error {
	bad := func(e entry, k int, b, r float32) error {
		what := fmt.Sprint(r)
		if finite(r) {
			what = fmt.Sprintf("%v, beyond the range of %v (+Inf or -Inf once rounded)", r, ws.DType)
		}
		return fmt.Errorf("%w: adapter %s value %d (index %d) turns the finite base value %v into %s (alpha %v)",
			ErrNonFinite, closest.Quote(e.owner.Name), k, e.t.Indices[k], b, what, e.alpha)
	}
	if len(ws.next) == 1 {
		e := ws.next[0]
		pos := 0
		for k, i := range e.t.Indices {
			var b float32
			b, pos = ws.base(i, pos)
			if !finite(b) {
				continue
			}
			v := value(e.t, k)
			r := v
			if !e.exact() {
				d := v
				if e.sem == adapter.Overwrite {
					d = v - b
				}
				r = b + float32(e.alpha*d)
			}
			if !rounded(ws.DType, r) {
				return bad(e, k, b, r)
			}
		}
		return nil
	}
	// fusion: accumulate per index over the entries, in order
	type acc struct {
		b, sum float32
		e      entry // the last entry touching the index, for the message
		k      int
	}
	sums := map[uint32]*acc{}
	for _, e := range ws.next {
		for k, i := range e.t.Indices {
			a := sums[i]
			if a == nil {
				b, _ := ws.base(i, sort.Search(len(ws.touched), func(x int) bool { return ws.touched[x] >= i }))
				a = &acc{b: b, sum: b}
				sums[i] = a
			}
			d := value(e.t, k)
			if e.sem == adapter.Overwrite {
				d -= a.b
			}
			a.sum += float32(e.alpha * d)
			a.e, a.k = e, k
		}
	}
	idx := make([]uint32, 0, len(sums))
	for i := range sums {
		idx = append(idx, i)
	}
	sort.Slice(idx, func(x, y int) bool { return idx[x] < idx[y] }) // the first bad index, deterministically
	for _, i := range idx {
		a := sums[i]
		if finite(a.b) && !rounded(ws.DType, a.sum) {
			return bad(a.e, a.k, a.b, a.sum)
		}
	}
	return nil
}
