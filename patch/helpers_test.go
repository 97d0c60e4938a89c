package patch

import (
	"bytes"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/tensor"
)

var floatTypes = []tensor.DType{tensor.Float32, tensor.Float16, tensor.BFloat16}

// specialF32 are bit patterns every test weight contains: NaNs with
// payloads, signed zeros, infinities, subnormals, extremes.
var specialF32 = []uint32{0x7fc00001, 0xffa00123, 0x7f800001, 0x80000000, 0x00000000, 0x7f800000, 0xff800000, 0x00000001, 0x807fffff, 0x7f7fffff, 0x3f800000}
var specialU16 = []uint16{0x7e01, 0xfd23, 0x7c01, 0x7f81, 0xffc1, 0x8000, 0x0000, 0x7c00, 0xfc00, 0x0001, 0x83ff, 0x7bff, 0x3c00}

// randomData returns n random elements of dt (normal values plus the
// special patterns at the start), 8-byte aligned.
func randomData(dt tensor.DType, n int, rng *rand.Rand) []byte {
	buf := make([]int64, (n*dt.Size()+7)/8)
	b := tensor.Bytes(buf)[:n*dt.Size()]
	if dt == tensor.Float32 {
		f := tensor.Float32s(b)
		for i := range f {
			f[i] = float32(rng.NormFloat64())
		}
		copy(tensor.Uint32s(b), specialF32)
		return b
	}
	h := tensor.Uint16s(b)
	for i := range h {
		v := float32(rng.NormFloat64())
		if dt == tensor.Float16 {
			h[i] = tensor.Float32ToFloat16(v)
		} else {
			h[i] = tensor.Float32ToBFloat16(v)
		}
	}
	copy(h, specialU16)
	return b
}

// randomTensor makes an adapter tensor for a weight touching about
// density of its entries (always including the first few special ones
// when withSpecial).
func randomTensor(name string, dt, vdt tensor.DType, shape []int64, density float64, rng *rand.Rand) adapter.Tensor {
	n, _ := tensor.NumElements(shape)
	var ix []uint32
	for i := range n {
		if rng.Float64() < density {
			ix = append(ix, uint32(i))
		}
	}
	if len(ix) == 0 {
		ix = []uint32{uint32(rng.IntN(n))}
	}
	vals := randomData(vdt, len(ix), rng)
	// shuffle so specials are not always at the same index
	rng.Shuffle(len(ix), func(a, b int) {
		s := vdt.Size()
		for k := 0; k < s; k++ {
			vals[a*s+k], vals[b*s+k] = vals[b*s+k], vals[a*s+k]
		}
	})
	return adapter.Tensor{Name: name, DType: dt, ValueDType: vdt, Shape: slices.Clone(shape), Indices: ix, Values: vals}
}

// finiteValues replaces the NaN and infinite values of t by 1, for adapters that
// must pass adapter.Validate (files).
func finiteValues(t adapter.Tensor) adapter.Tensor {
	for k := range t.Indices {
		if v := widen(t.ValueDType, t.Values, k); math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			put(t.ValueDType, t.Values, k, 1)
		}
	}
	return t
}

func widen(dt tensor.DType, b []byte, i int) float32 {
	switch dt {
	case tensor.Float32:
		return math.Float32frombits(uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24)
	case tensor.Float16:
		return tensor.Float16ToFloat32(uint16(b[2*i]) | uint16(b[2*i+1])<<8)
	}
	return tensor.BFloat16ToFloat32(uint16(b[2*i]) | uint16(b[2*i+1])<<8)
}

func put(dt tensor.DType, b []byte, i int, f float32) {
	switch dt {
	case tensor.Float32:
		u := math.Float32bits(f)
		b[4*i], b[4*i+1], b[4*i+2], b[4*i+3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
	case tensor.Float16:
		u := tensor.Float32ToFloat16(f)
		b[2*i], b[2*i+1] = byte(u), byte(u>>8)
	default:
		u := tensor.Float32ToBFloat16(f)
		b[2*i], b[2*i+1] = byte(u), byte(u>>8)
	}
}

// reference computes the patched weight densely and independently of the
// kernels: for every element, look the index up in every configuration.
func reference(w Weight, base []byte, cfgs []Config) []byte {
	out := slices.Clone(base)
	n, _ := tensor.NumElements(w.Shape)
	es := w.DType.Size()
	type hit struct {
		t     *adapter.Tensor
		j     int
		alpha float32
		sem   adapter.Semantics
	}
	var hits []hit
	for i := range n {
		hits = hits[:0]
		for _, c := range cfgs {
			t := c.Adapter.Tensor(w.Name)
			if t == nil {
				continue
			}
			if j, ok := slices.BinarySearch(t.Indices, uint32(i)); ok {
				hits = append(hits, hit{t, j, c.Alpha, c.Adapter.Semantics})
			}
		}
		if len(hits) == 0 {
			continue
		}
		if h := hits[0]; len(hits) == 1 && h.sem == adapter.Overwrite && h.alpha == 1 {
			if h.t.ValueDType == w.DType {
				copy(out[i*es:(i+1)*es], h.t.Values[h.j*es:(h.j+1)*es])
			} else {
				put(w.DType, out, i, widen(h.t.ValueDType, h.t.Values, h.j))
			}
			continue
		}
		b := widen(w.DType, base, i)
		acc := b
		for _, h := range hits {
			v := widen(h.t.ValueDType, h.t.Values, h.j)
			d := v
			if h.sem == adapter.Overwrite {
				d = v - b
			}
			prod := float32(h.alpha * d)
			acc += prod
		}
		put(w.DType, out, i, acc)
	}
	return out
}

// fixture is a set of weights with a pristine copy of their bytes.
type fixture struct {
	weights []Weight
	base    [][]byte
}

func newFixture(rng *rand.Rand, specs ...Weight) *fixture {
	f := &fixture{}
	for _, s := range specs {
		n, _ := tensor.NumElements(s.Shape)
		s.Data = randomData(s.DType, n, rng)
		f.weights = append(f.weights, s)
		f.base = append(f.base, slices.Clone(s.Data))
	}
	return f
}

func (f *fixture) checkBase(t *testing.T, what string) {
	t.Helper()
	for i, w := range f.weights {
		if !bytes.Equal(w.Data, f.base[i]) {
			t.Fatalf("%s: weight %q differs from base at byte %d", what, w.Name, firstDiff(w.Data, f.base[i]))
		}
	}
}

func (f *fixture) checkRef(t *testing.T, what string, cfgs []Config) {
	t.Helper()
	for i, w := range f.weights {
		want := reference(w, f.base[i], cfgs)
		if bytes.Equal(w.Data, want) {
			continue
		}
		// Arithmetic results may differ only in NaN payload: IEEE leaves
		// the payload of an operation's NaN result to the hardware and
		// operand order. Everything else must be bit-identical.
		n := len(want) / w.DType.Size()
		for k := range n {
			g, r := widen(w.DType, w.Data, k), widen(w.DType, want, k)
			es := w.DType.Size()
			if bytes.Equal(w.Data[k*es:(k+1)*es], want[k*es:(k+1)*es]) || (g != g && r != r) {
				continue
			}
			t.Fatalf("%s: weight %q element %d: got %v want %v (base %v)", what, w.Name, k, g, r, widen(w.DType, f.base[i], k))
		}
	}
}

// clone returns a fixture with copies of f's weights (same names, dtypes
// and current bytes) and the same base.
func (f *fixture) clone() *fixture {
	g := &fixture{base: f.base}
	for _, w := range f.weights {
		w.Data = alignedClone(w.Data)
		g.weights = append(g.weights, w)
	}
	return g
}

// alignedClone copies b into an 8-byte aligned buffer.
func alignedClone(b []byte) []byte {
	c := tensor.Bytes(make([]int64, (len(b)+7)/8))[:len(b)]
	copy(c, b)
	return c
}

// checkSame fails unless f's and g's weights are byte-identical.
func (f *fixture) checkSame(t *testing.T, what string, g *fixture) {
	t.Helper()
	for i, w := range f.weights {
		if !bytes.Equal(w.Data, g.weights[i].Data) {
			t.Fatalf("%s: weight %q differs at byte %d", what, w.Name, firstDiff(w.Data, g.weights[i].Data))
		}
	}
}

func (f *fixture) snapshot() [][]byte {
	s := make([][]byte, len(f.weights))
	for i, w := range f.weights {
		s[i] = slices.Clone(w.Data)
	}
	return s
}

func (f *fixture) checkSnapshot(t *testing.T, what string, s [][]byte) {
	t.Helper()
	for i, w := range f.weights {
		if !bytes.Equal(w.Data, s[i]) {
			t.Fatalf("%s: weight %q changed at byte %d", what, w.Name, firstDiff(w.Data, s[i]))
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
