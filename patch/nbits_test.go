package patch

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/quant"
	"github.com/shira-ort/shira-ort/internal/testutil"
	"github.com/shira-ort/shira-ort/tensor"
)

// nbw is a MatMulNBits test weight with its parameters kept independently
// of the quant.Scheme, so the reference below decodes, dequantizes and
// quantizes by hand from the documented layout: B is [N][k_blocks][blob],
// blob = block_size·bits/8 bytes, element (k, n) (flat index k·N + n) in
// block kb = k/block_size at position j = k%block_size, low bits first;
// scale and zero point at n·k_blocks + kb.
type nbw struct {
	k, n, bits, bs, kb, blob int
	scales                   []float32
	zps                      []int32   // integer zero points (default filled in), nil with fzps
	fzps                     []float32 // float zero points, or nil
	sc                       *quant.Scheme
	base                     []byte
	rounding                 quant.Rounding // of the patcher under test
}

func (w *nbw) numel() int      { return w.k * w.n }
func (w *nbw) shape() []int64  { return []int64{int64(w.k), int64(w.n)} }
func (w *nbw) param(i int) int { return (i%w.n)*w.kb + (i/w.n)/w.bs }

// loc returns the byte and bit shift of element i's code.
func (w *nbw) loc(i int) (off int, sh uint) {
	k, c := i/w.n, i%w.n
	bit := (k % w.bs) * w.bits
	return (c*w.kb+k/w.bs)*w.blob + bit/8, uint(bit % 8)
}

func (w *nbw) code(raw []byte, i int) int32 {
	off, sh := w.loc(i)
	return int32(raw[off]>>sh) & (1<<w.bits - 1)
}

func (w *nbw) setCode(raw []byte, i int, q int32) {
	off, sh := w.loc(i)
	m := byte(1<<w.bits-1) << sh
	raw[off] = raw[off]&^m | byte(q)<<sh
}

func (w *nbw) deq(i int, q int32) float32 {
	p := w.param(i)
	if w.fzps != nil {
		return float32(float32(q)-w.fzps[p]) * w.scales[p]
	}
	return float32(q-w.zps[p]) * w.scales[p]
}

// quant rounds half to even, adds the zero point and saturates to
// [0, 2^bits − 1] (float zero points are added before rounding, as
// MatMulNBits' float zero points are).
func (w *nbw) quant(i int, v float32) (int32, bool) {
	p := w.param(i)
	x := v / w.scales[p]
	if x != x {
		return 0, true
	}
	var r float64
	if w.fzps != nil {
		r = w.rounding.Round(uint32(i), float64(x)+float64(w.fzps[p]))
	} else {
		r = w.rounding.Round(uint32(i), float64(x)) + float64(w.zps[p])
	}
	hi := float64(int32(1)<<w.bits - 1)
	if r < 0 {
		return 0, true
	}
	if r > hi {
		return int32(hi), true
	}
	return int32(r), false
}

// newNBW makes a random MatMulNBits weight: zp "none" (default zero
// point), "packed" (random uint8-packed zero points, garbage in the
// padding bits) or "float". Every byte of the storage is random, the
// padding codes of a partial last block included.
func newNBW(t *testing.T, rng *rand.Rand, k, n, bits, bs int, zp string) *nbw {
	t.Helper()
	w := &nbw{k: k, n: n, bits: bits, bs: bs, kb: (k + bs - 1) / bs, blob: bs * bits / 8}
	maxq := int32(1)<<bits - 1
	for p := range n * w.kb {
		s := float32(math.Exp(rng.Float64()*4.6-6.9) * 256 / float64(maxq))
		if p%5 == 3 {
			s = -s
		}
		w.scales = append(w.scales, s)
	}
	var err error
	switch zp {
	case "none":
		for range n * w.kb {
			w.zps = append(w.zps, 1<<(bits-1))
		}
		w.sc, err = quant.NewNBits(k, n, bits, bs, slices.Clone(w.scales), nil)
	case "packed":
		row := (w.kb*bits + 7) / 8
		packed := make([]byte, n*row)
		for i := range packed {
			packed[i] = byte(rng.Uint32()) // padding bits stay garbage
		}
		for c := range n {
			for b := range w.kb {
				z := int32(rng.IntN(int(maxq) + 1))
				w.zps = append(w.zps, z)
				bit := b * bits
				off, sh := c*row+bit/8, uint(bit%8)
				m := byte(maxq) << sh
				packed[off] = packed[off]&^m | byte(z)<<sh
			}
		}
		w.sc, err = quant.NewNBits(k, n, bits, bs, slices.Clone(w.scales), packed)
	case "float":
		for range n * w.kb {
			w.fzps = append(w.fzps, float32(rng.Float64()*float64(maxq)))
		}
		w.sc, err = quant.NewNBitsFloatZP(k, n, bits, bs, slices.Clone(w.scales), slices.Clone(w.fzps))
	default:
		t.Fatalf("zp %q", zp)
	}
	if err != nil {
		t.Fatal(err)
	}
	w.base = make([]byte, n*w.kb*w.blob)
	for i := range w.base {
		w.base[i] = byte(rng.Uint32())
	}
	if w.sc.RawLen() != len(w.base) {
		t.Fatalf("RawLen %d, hand layout %d", w.sc.RawLen(), len(w.base))
	}
	return w
}

// nbTensor makes an adapter tensor for w touching about density of its
// entries, values in the dequantized domain: near the base value
// (overwrite) or deltas, from a fraction of a quantization step to far
// beyond the code range.
func nbTensor(t *testing.T, rng *rand.Rand, name string, w *nbw, sem adapter.Semantics, vdt tensor.DType, density float64) adapter.Tensor {
	t.Helper()
	return sparseQuantTensor(t, rng, name, tensor.Uint8, w.shape(), w.numel(), []float64{0.2, 1, 3, 40, 1e4},
		func(i int) float32 { return w.scales[w.param(i)] },
		func(i int) float32 { return w.deq(i, w.code(w.base, i)) },
		6e4, // finite in float16 too
		sem, vdt, density)
}

// nbReference computes w's patched storage under cfgs densely and by
// hand; also the expected Survival and whether a configuration targets
// the weight.
func nbReference(w *nbw, name string, cfgs []Config) ([]byte, quant.Survival, bool) {
	out := bytes.Clone(w.base)
	sv, targeted := denseReference(w.numel(), name, cfgs,
		func(i int) int32 { return w.code(w.base, i) }, w.deq, w.quant,
		func(i int, q int32) { w.setCode(out, i, q) })
	return out, sv, targeted
}

var nbCases = []struct {
	name            string
	k, n, bits, bs  int
	zp              string
	rk, rn, rb, rbs int // a second MatMulNBits weight "r"
}{
	{"4bit/bs16/packed-zp/kb3", 37, 5, 4, 16, "packed", 19, 3, 2, 16},
	{"4bit/bs32/packed-zp/kb3", 71, 3, 4, 32, "packed", 33, 2, 8, 32},
	{"4bit/bs16/no-zp", 23, 4, 4, 16, "none", 17, 3, 4, 32},
	{"4bit/bs32/no-zp", 45, 3, 4, 32, "none", 21, 2, 4, 16},
	{"4bit/bs32/float-zp", 45, 3, 4, 32, "float", 21, 2, 2, 16},
	{"8bit/bs16/packed-zp", 29, 4, 8, 16, "packed", 17, 3, 4, 16},
	{"8bit/bs32/no-zp", 33, 3, 8, 32, "none", 19, 2, 4, 32},
	{"2bit/bs16/packed-zp/kb3", 37, 5, 2, 16, "packed", 23, 3, 4, 16},
	{"2bit/bs32/no-zp", 19, 3, 2, 32, "none", 35, 2, 8, 16},
}

// nbEnv is a patcher over two MatMulNBits weights "q" and "r" and a
// float32 weight "f", with a pool of adapters targeting them.
type nbEnv struct {
	ws   []*nbw   // q, r
	data [][]byte // their live storage
	f    *fixture
	p    *Patcher
	pool []*adapter.Adapter
}

var nbNames = []string{"q", "r"}

func newNBEnv(t *testing.T, rng *rand.Rand, ci int, opts ...Option) *nbEnv {
	t.Helper()
	c := nbCases[ci]
	rzp := []string{"none", "packed", "float"}[ci%3]
	e := &nbEnv{ws: []*nbw{newNBW(t, rng, c.k, c.n, c.bits, c.bs, c.zp), newNBW(t, rng, c.rk, c.rn, c.rb, c.rbs, rzp)}}
	for _, w := range e.ws {
		e.data = append(e.data, bytes.Clone(w.base))
		w.rounding = roundingOf(opts)
	}
	e.f = newFixture(rng, Weight{Name: "f", DType: tensor.Float32, Shape: []int64{5, 7}})
	var err error
	if e.p, err = New(e.weights(e.data[0], e.data[1], e.f.weights[0].Data), opts...); err != nil {
		t.Fatal(err)
	}
	for k := range 4 {
		sem := adapter.Semantics(k % 2)
		a := &adapter.Adapter{Name: fmt.Sprint("a", k), Semantics: sem, DefaultAlpha: 1}
		if k < 2 || rng.IntN(5) > 0 {
			a.Tensors = append(a.Tensors, nbTensor(t, rng, "q", e.ws[0], sem, floatTypes[rng.IntN(3)], 0.1+0.6*rng.Float64()))
		}
		if rng.IntN(3) > 0 {
			a.Tensors = append(a.Tensors, nbTensor(t, rng, "r", e.ws[1], sem, floatTypes[rng.IntN(3)], 0.1+0.6*rng.Float64()))
		}
		if rng.IntN(2) == 0 {
			a.Tensors = append(a.Tensors, finiteValues(randomTensor("f", tensor.Float32, floatTypes[rng.IntN(3)], []int64{5, 7}, 0.3, rng)))
		}
		e.pool = append(e.pool, a)
	}
	return e
}

func (e *nbEnv) weights(q, r, f []byte) []Weight {
	return []Weight{
		{Name: "q", DType: tensor.Uint8, Shape: e.ws[0].shape(), Data: q, Quant: e.ws[0].sc},
		{Name: "f", DType: tensor.Float32, Shape: []int64{5, 7}, Data: f},
		{Name: "r", DType: tensor.Uint8, Shape: e.ws[1].shape(), Data: r, Quant: e.ws[1].sc},
	}
}

func (e *nbEnv) checkBase(t *testing.T, what string) {
	t.Helper()
	for k, w := range e.ws {
		if !bytes.Equal(e.data[k], w.base) {
			t.Fatalf("%s: %q differs from its base bytes at byte %d", what, nbNames[k], firstDiff(e.data[k], w.base))
		}
	}
	e.f.checkBase(t, what)
}

// check compares the live storage, the float weight and Survival with the
// references, and FuseInto on copies of the base weights with the live
// bytes.
func (e *nbEnv) check(t *testing.T, what string, active []Config) {
	t.Helper()
	svs := e.p.Survival()
	for k, w := range e.ws {
		name := nbNames[k]
		want, wsv, targeted := nbReference(w, name, active)
		if !bytes.Equal(e.data[k], want) {
			b := firstDiff(e.data[k], want)
			t.Fatalf("%s: %q (%d-bit, block %d) byte %d is %#02x, want %#02x (base %#02x)", what, name, w.bits, w.bs, b, e.data[k][b], want[b], w.base[b])
		}
		if sv, ok := svs[name]; ok != targeted || sv != wsv {
			t.Fatalf("%s: %q: Survival = %+v (present %v), want %+v (present %v)", what, name, sv, ok, wsv, targeted)
		}
	}
	if _, ok := svs["f"]; ok {
		t.Fatalf("%s: Survival reports the float weight", what)
	}
	e.f.checkRef(t, what, active)
	q, r, f := bytes.Clone(e.ws[0].base), bytes.Clone(e.ws[1].base), alignedClone(e.f.base[0])
	var fsv map[string]Survival
	if err := FuseInto(e.weights(q, r, f), active, WithRounding(e.ws[0].rounding), WithSurvivalReport(func(m map[string]Survival) { fsv = m })); err != nil {
		t.Fatalf("%s: FuseInto: %v", what, err)
	}
	if !bytes.Equal(q, e.data[0]) || !bytes.Equal(r, e.data[1]) || !bytes.Equal(f, e.f.weights[0].Data) {
		t.Fatalf("%s: FuseInto differs from the patcher", what)
	}
	if len(active) > 0 && (len(fsv) != len(svs) || fsv["q"] != svs["q"] || fsv["r"] != svs["r"]) {
		t.Fatalf("%s: FuseInto reports %v, the patcher %v", what, fsv, svs)
	}
}

// TestNBitsSequences runs random Set / Apply / Revert / switch / Validate
// sequences (one and two adapters, overwrite and delta, α 1, 0.5 and
// others) on two MatMulNBits weights (2, 4 and 8 bits, block sizes 16
// and 32, odd K so the last block is partial, packed zero points with odd
// k_blocks, float and default zero points) next to a float one, and
// compares the storage bytes, Survival and FuseInto with the hand-decoded
// references after every step; Revert restores the base bytes (padding
// codes included). Every phase runs in parallel (serialWork 0).
func TestNBitsSequences(t *testing.T) {
	testutil.Replace(t, &serialWork, 0)
	for _, fuse := range []bool{true, false} {
		t.Run(fmt.Sprintf("fused=%v", fuse), func(t *testing.T) {
			testutil.Replace(t, &noFuse, !fuse)
			nbSequences(t)
		})
	}
}

// nbSequences is TestNBitsSequences with the current noFuse: the fused
// commit (codes computed as they are written) or plan then commit.
func nbSequences(t *testing.T) {
	for ci, c := range nbCases {
		t.Run(c.name, func(t *testing.T) {
			for seed := range uint64(4) {
				rng := rand.New(rand.NewPCG(seed, 100+uint64(ci)))
				// odd seeds round stochastically
				e := newNBEnv(t, rng, ci, WithWorkers(1+int(seed%3)), WithRounding(Rounding(seed%2)))
				runQuantSequence(t, fmt.Sprintf("seed %d", seed), rng, e.p, e.pool, func() [][]byte { return e.data },
					func(what string, active []Config) { e.check(t, what, active) },
					func(what string) { e.checkBase(t, what) })
				e.p.Revert()
				e.checkBase(t, "final Revert")
				if len(e.p.Survival()) != 0 {
					t.Fatalf("Survival after Revert: %v", e.p.Survival())
				}
			}
		})
	}
}

// TestNBitsNibbles checks a small 4-bit case by hand: K = 17 with block
// size 16 (the second block holds one code and 15 padding codes), N = 2;
// patching one code of a byte leaves the other nibble alone, an exact
// overwrite quantizes the value itself (half to even), saturates, and
// Revert restores every byte.
func TestNBitsNibbles(t *testing.T) {
	// column 0: scale 0.5, zp 3 (block 0) and scale 1, zp 8 (block 1);
	// column 1: scale 0.25, zp 0 and scale 2, zp 15
	sc, err := quant.NewNBits(17, 2, 4, 16, []float32{0.5, 1, 0.25, 2}, []byte{0x83, 0xf0})
	if err != nil {
		t.Fatal(err)
	}
	if sc.RawLen() != 2*2*8 {
		t.Fatalf("RawLen %d", sc.RawLen())
	}
	base := make([]byte, sc.RawLen())
	for i := range base {
		base[i] = byte(0x5a + 17*i)
	}
	data := bytes.Clone(base)
	p, err := New([]Weight{{Name: "w", DType: tensor.Uint8, Shape: []int64{17, 2}, Data: data, Quant: sc}})
	if err != nil {
		t.Fatal(err)
	}
	// (k, n) → index 2k + n; (0,0) low nibble of byte 0; (1,0) its high
	// nibble; (16,0) low nibble of byte 8 (block 1 of column 0); (3,1)
	// high nibble of byte 16+1; (16,1) low nibble of byte 24.
	ix := []uint32{0, 2*16 + 0, 2*3 + 1, 2*16 + 1}
	vals := []float32{1.25, -100, 0.375, 1e9} // 2.5→2 +3 = 5; clipped 0; 1.5→2; clipped 15
	at, err := adapter.NewTensor("w", tensor.Uint8, []int64{17, 2}, ix, vals, tensor.Float32)
	if err != nil {
		t.Fatal(err)
	}
	a := &adapter.Adapter{Name: "a", Semantics: adapter.Overwrite, Tensors: []adapter.Tensor{at}}
	if err := p.Set(Config{a, 1}); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(base)
	want[0] = want[0]&0xf0 | 5
	want[8] = want[8]&0xf0 | 0
	want[17] = want[17]&0x0f | 2<<4
	want[24] = want[24]&0xf0 | 15
	if !bytes.Equal(data, want) {
		t.Fatalf("codes\n% x, want\n% x", data, want)
	}
	sv := p.Survival()["w"]
	if sv.Touched != 4 || sv.Clipped != 2 {
		t.Fatalf("Survival %+v", sv)
	}
	// now the neighbour (1,0) too, by a delta: both nibbles of byte 0 change
	bt, err := adapter.NewTensor("w", tensor.Uint8, []int64{17, 2}, []uint32{2}, []float32{1}, tensor.Float32)
	if err != nil {
		t.Fatal(err)
	}
	b := &adapter.Adapter{Name: "b", Semantics: adapter.Delta, Tensors: []adapter.Tensor{bt}}
	if err := p.Apply(Config{b, 1}); err != nil {
		t.Fatal(err)
	}
	hi := int32(base[0] >> 4) // (1,0): +1/0.5 = +2 codes, saturating
	want[0] = want[0]&0x0f | byte(min(hi+2, 15))<<4
	if !bytes.Equal(data, want) {
		t.Fatalf("after Apply\n% x, want\n% x", data, want)
	}
	if err := p.Set(Config{b, 1}); err != nil { // switch: (0,0) reverted, (1,0) kept
		t.Fatal(err)
	}
	want2 := bytes.Clone(base)
	want2[0] = want[0]&0xf0 | base[0]&0x0f
	if !bytes.Equal(data, want2) {
		t.Fatalf("after switch\n% x, want\n% x", data, want2)
	}
	p.Revert()
	if !bytes.Equal(data, base) {
		t.Fatalf("Revert\n% x, want\n% x", data, base)
	}
}

// TestNBitsRefused: invalid configurations touching a MatMulNBits weight
// are refused by Validate, Set, Apply and FuseInto and change nothing.
func TestNBitsRefused(t *testing.T) {
	for ci, c := range nbCases {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(78, uint64(ci)))
			e := newNBEnv(t, rng, ci)
			good := e.pool[0]
			w := e.ws[0]
			mk := func(sem adapter.Semantics, mod func(at *adapter.Tensor)) *adapter.Adapter {
				at := nbTensor(t, rng, "q", w, sem, tensor.Float32, 0.5)
				mod(&at)
				return &adapter.Adapter{Name: "bad", Semantics: sem, Tensors: []adapter.Tensor{
					finiteValues(randomTensor("f", tensor.Float32, tensor.Float32, []int64{5, 7}, 0.5, rng)),
					nbTensor(t, rng, "r", e.ws[1], sem, tensor.Float32, 0.5), at}}
			}
			setVal := func(at *adapter.Tensor, v float32) { put(tensor.Float32, at.Values, len(at.Indices)/2, v) }
			cases := []struct {
				name  string
				cfg   Config
				is    error
				wants string
			}{
				{"index", Config{mk(adapter.Overwrite, func(at *adapter.Tensor) { at.Indices[len(at.Indices)-1] = uint32(w.numel()) }), 1}, ErrConfig, "out of range"},
				{"nan", Config{mk(adapter.Overwrite, func(at *adapter.Tensor) { setVal(at, float32(math.NaN())) }), 0.5}, ErrNonFinite, "NaN"},
				{"nan exact", Config{mk(adapter.Overwrite, func(at *adapter.Tensor) { setVal(at, float32(math.NaN())) }), 1}, ErrNonFinite, "NaN"},
				{"inf delta", Config{mk(adapter.Delta, func(at *adapter.Tensor) { setVal(at, float32(math.Inf(-1))) }), 1}, ErrNonFinite, "-Inf"},
				{"inf alpha 0", Config{mk(adapter.Delta, func(at *adapter.Tensor) { setVal(at, float32(math.Inf(1))) }), 0}, ErrNonFinite, "+Inf"},
				{"overflow", Config{mk(adapter.Delta, func(at *adapter.Tensor) { setVal(at, 3e38) }), 3e38}, ErrNonFinite, "index"},
				{"float dtype", Config{mk(adapter.Delta, func(at *adapter.Tensor) { at.DType = tensor.Float32 }), 1}, ErrMismatch, "weight is uint8"},
				{"code dtype", Config{mk(adapter.Delta, func(at *adapter.Tensor) { at.DType = tensor.Int8 }), 1}, ErrMismatch, "dtype int8"},
				{"packed shape", Config{mk(adapter.Delta, func(at *adapter.Tensor) { at.Shape = []int64{int64(w.n), int64(w.kb), int64(w.blob)} }), 1}, ErrMismatch, "shape"},
				{"transposed", Config{mk(adapter.Delta, func(at *adapter.Tensor) { at.Shape = []int64{int64(w.n), int64(w.k)} }), 1}, ErrMismatch, "shape"},
			}
			for _, bc := range cases {
				if err := e.p.Set(Config{good, 0.5}); err != nil {
					t.Fatal(err)
				}
				snap := [][]byte{bytes.Clone(e.data[0]), bytes.Clone(e.data[1])}
				fsnap, sv := e.f.snapshot(), e.p.Survival()
				for k, try := range []func() error{
					func() error { return e.p.Validate(bc.cfg) },
					func() error { return e.p.Set(bc.cfg) },
					func() error { return e.p.Set(Config{good, 1}, bc.cfg) },
					func() error { return e.p.Apply(bc.cfg) },
					func() error {
						q, r := bytes.Clone(e.ws[0].base), bytes.Clone(e.ws[1].base)
						err := FuseInto(e.weights(q, r, alignedClone(e.f.base[0])), []Config{bc.cfg})
						if !bytes.Equal(q, e.ws[0].base) || !bytes.Equal(r, e.ws[1].base) {
							t.Fatalf("%s: a refused FuseInto wrote", bc.name)
						}
						return err
					},
				} {
					err := try()
					if !errors.Is(err, bc.is) || !strings.Contains(err.Error(), bc.wants) {
						t.Fatalf("%s try %d: got %v, want %v mentioning %q", bc.name, k, err, bc.is, bc.wants)
					}
					if !bytes.Equal(snap[0], e.data[0]) || !bytes.Equal(snap[1], e.data[1]) {
						t.Fatalf("%s try %d: a MatMulNBits weight changed", bc.name, k)
					}
					e.f.checkSnapshot(t, bc.name, fsnap)
					if a := e.p.Active(); len(a) != 1 || a[0].Adapter != good || a[0].Alpha != 0.5 {
						t.Fatalf("%s: active changed: %v", bc.name, a)
					}
					if got := e.p.Survival(); got["q"] != sv["q"] || got["r"] != sv["r"] || len(got) != len(sv) {
						t.Fatalf("%s: Survival changed: %v, was %v", bc.name, got, sv)
					}
				}
				e.check(t, bc.name+": after the refusals", []Config{{good, 0.5}})
			}
			e.p.Revert()
			e.checkBase(t, "Revert")
		})
	}
}

// TestNBitsNew: New checks a MatMulNBits weight against its scheme: dtype
// uint8, Shape the logical [K, N], Data the packed RawLen bytes (not
// K·N), not Widened; a scheme that is complete but not validated is
// accepted, and the caller's Scheme is not written.
func TestNBitsNew(t *testing.T) {
	sc, err := quant.NewNBits(33, 3, 4, 16, make([]float32, 9), nil)
	if err == nil {
		t.Fatal("zero scales accepted")
	}
	scales := []float32{1, 1, 1, 1, 1, 1, 1, 1, 1}
	if sc, err = quant.NewNBits(33, 3, 4, 16, scales, nil); err != nil {
		t.Fatal(err)
	}
	good := Weight{Name: "w", DType: tensor.Uint8, Shape: []int64{33, 3}, Data: make([]byte, sc.RawLen()), Quant: sc}
	if _, err := New([]Weight{good}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, wants string
		mod         func(w *Weight)
	}{
		{"dtype", "dtype int8", func(w *Weight) { w.DType = tensor.Int8 }},
		{"float dtype", "dtype float32", func(w *Weight) { w.DType = tensor.Float32 }},
		{"transposed", "shape [3 33]", func(w *Weight) { w.Shape = []int64{3, 33} }},
		{"packed shape", "shape [3 3 8]", func(w *Weight) { w.Shape = []int64{3, 3, 8} }},
		{"K·N bytes", "need 72 packed bytes, have 99", func(w *Weight) { w.Data = make([]byte, 99) }},
		{"short", "need 72 packed bytes, have 71", func(w *Weight) { w.Data = w.Data[:71] }},
		{"widened", "Widened", func(w *Weight) { w.Widened = true }},
		{"kind", "not supported", func(w *Weight) { w.Quant = &quant.Scheme{Kind: 9} }},
		{"bits", "bits 3", func(w *Weight) {
			w.Quant = &quant.Scheme{Kind: quant.KindNBits, Bits: 3, Shape: []int64{33, 3}, BlockSize: 16, Scales: scales}
		}},
	} {
		w := good
		c.mod(&w)
		if _, err := New([]Weight{w}); !errors.Is(err, ErrWeight) || !strings.Contains(err.Error(), c.wants) {
			t.Errorf("%s: New = %v, want ErrWeight mentioning %q", c.name, err, c.wants)
		}
	}
	raw := &quant.Scheme{Kind: quant.KindNBits, Bits: 8, Shape: []int64{33, 3}, BlockSize: 32, Scales: []float32{0.5, 0.5, 0.5, 0.5, 0.5, 0.5}}
	w := Weight{Name: "w", DType: tensor.Uint8, Shape: []int64{33, 3}, Data: make([]byte, 3*2*32), Quant: raw}
	p, err := New([]Weight{w})
	if err != nil {
		t.Fatal(err)
	}
	// element (1, 2): index 5, column 2 block 0 at byte 2·2·32 + 1; zp 128
	at, err := adapter.NewTensor("w", tensor.Uint8, []int64{33, 3}, []uint32{5}, []float32{3}, tensor.BFloat16)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Set(Config{&adapter.Adapter{Name: "a", Tensors: []adapter.Tensor{at}}, 1}); err != nil {
		t.Fatal(err)
	}
	if got := w.Data[2*2*32+1]; got != 134 {
		t.Fatalf("code %d, want 134", got)
	}
	if raw.CodeType != 0 || raw.ZeroPoints != nil {
		t.Fatal("New wrote the caller's Scheme")
	}
	p.Revert()
	if !bytes.Equal(w.Data, make([]byte, len(w.Data))) {
		t.Fatal("Revert")
	}
}

// TestNBitsConcurrentWeights patches several big 4- and 2-bit weights
// (dense adapters, so neighbouring codes of a byte are all patched) next
// to float weights split into small chunks, with four workers, and checks
// the result with the reference: under -race, any task sharing a byte
// with another shows up.
func TestNBitsConcurrentWeights(t *testing.T) {
	testutil.Replace(t, &serialWork, 0)
	testutil.Replace(t, &chunkEntries, 64)
	rng := rand.New(rand.NewPCG(5, 6))
	var ws []*nbw
	var weights []Weight
	var data [][]byte
	for k, spec := range [][3]int{{255, 9, 4}, {129, 7, 2}, {97, 5, 4}, {65, 11, 8}} {
		w := newNBW(t, rng, spec[0], spec[1], spec[2], 16<<(k%2), []string{"packed", "none"}[k%2])
		ws = append(ws, w)
		data = append(data, bytes.Clone(w.base))
		weights = append(weights, Weight{Name: fmt.Sprint("n", k), DType: tensor.Uint8, Shape: w.shape(), Data: data[k], Quant: w.sc})
	}
	f := newFixture(rng, Weight{Name: "f0", DType: tensor.Float32, Shape: []int64{64, 40}}, Weight{Name: "f1", DType: tensor.Float16, Shape: []int64{30, 50}})
	weights = append(weights, f.weights...)
	p, err := New(weights, WithWorkers(4))
	if err != nil {
		t.Fatal(err)
	}
	mk := func(name string, sem adapter.Semantics, density float64) *adapter.Adapter {
		a := &adapter.Adapter{Name: name, Semantics: sem}
		for k, w := range ws {
			a.Tensors = append(a.Tensors, nbTensor(t, rng, fmt.Sprint("n", k), w, sem, tensor.Float32, density))
		}
		for _, fw := range f.weights {
			a.Tensors = append(a.Tensors, finiteValues(randomTensor(fw.Name, fw.DType, tensor.Float32, fw.Shape, density, rng)))
		}
		return a
	}
	a, b, c := mk("a", adapter.Overwrite, 0.9), mk("b", adapter.Delta, 0.5), mk("c", adapter.Overwrite, 0.3)
	for step, cfgs := range [][]Config{{{a, 1}}, {{b, 0.5}}, {{a, 1}, {b, 2}}, {{c, 1}}, {{c, 0.5}, {a, 1}}, {{a, 1}}, nil, {{b, 1}}} {
		if err := p.Set(cfgs...); err != nil {
			t.Fatal(err)
		}
		for k, w := range ws {
			want, _, _ := nbReference(w, fmt.Sprint("n", k), cfgs)
			if !bytes.Equal(data[k], want) {
				t.Fatalf("step %d: n%d differs at byte %d", step, k, firstDiff(data[k], want))
			}
		}
		f.checkRef(t, fmt.Sprint("step ", step), cfgs)
	}
	p.Revert()
	for k, w := range ws {
		if !bytes.Equal(data[k], w.base) {
			t.Fatalf("Revert: n%d differs at byte %d", k, firstDiff(data[k], w.base))
		}
	}
	f.checkBase(t, "Revert")
}
