package patch

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/tensor"
)

func TestSingleAdapterBitExact(t *testing.T) {
	for _, dt := range floatTypes {
		for _, vdt := range floatTypes {
			for _, sem := range []adapter.Semantics{adapter.Overwrite, adapter.Delta} {
				for _, alpha := range []float32{1, 0.5, -2, 0} {
					name := fmt.Sprintf("%v/%v/%v/alpha=%v", dt, vdt, sem, alpha)
					t.Run(name, func(t *testing.T) {
						rng := rand.New(rand.NewPCG(1, uint64(dt)*100+uint64(vdt)))
						f := newFixture(rng, Weight{Name: "w", DType: dt, Shape: []int64{16, 33}})
						a := &adapter.Adapter{Name: "a", Semantics: sem, DefaultAlpha: 1,
							Tensors: []adapter.Tensor{randomTensor("w", dt, vdt, []int64{16, 33}, 0.3, rng)}}
						// touch the special base values too
						p, err := New(f.weights)
						if err != nil {
							t.Fatal(err)
						}
						cfg := []Config{{a, alpha}}
						if err := p.Set(cfg...); err != nil {
							t.Fatal(err)
						}
						f.checkRef(t, "set", cfg)
						if sem == adapter.Overwrite && alpha == 1 && vdt == dt { // scatter: strictly bit-exact, NaN payloads included
							if want := reference(f.weights[0], f.base[0], cfg); string(want) != string(f.weights[0].Data) {
								t.Fatal("scatter is not bit-exact")
							}
						}
						p.Revert()
						f.checkBase(t, "revert")
						if len(p.Active()) != 0 {
							t.Fatal("active after revert")
						}
					})
				}
			}
		}
	}
}

// TestDenseSpecials patches every element (including the NaN, -0, inf and
// subnormal bases) so revert must restore each special pattern.
func TestDenseSpecials(t *testing.T) {
	for _, dt := range floatTypes {
		rng := rand.New(rand.NewPCG(9, 9))
		f := newFixture(rng, Weight{Name: "w", DType: dt, Shape: []int64{20}})
		for _, sem := range []adapter.Semantics{adapter.Overwrite, adapter.Delta} {
			a := &adapter.Adapter{Semantics: sem, Tensors: []adapter.Tensor{randomTensor("w", dt, dt, []int64{20}, 1, rng)}}
			b := &adapter.Adapter{Semantics: adapter.Delta, Tensors: []adapter.Tensor{randomTensor("w", dt, tensor.Float32, []int64{20}, 1, rng)}}
			p, _ := New(f.weights)
			for _, cfgs := range [][]Config{{{a, 1}}, {{a, 0.25}}, {{a, 1}, {b, 1}}, {{b, -1}, {a, 1}}} {
				if err := p.Set(cfgs...); err != nil {
					t.Fatal(err)
				}
				f.checkRef(t, fmt.Sprintf("%v %v set", dt, sem), cfgs)
			}
			p.Revert()
			f.checkBase(t, fmt.Sprintf("%v %v revert", dt, sem))
		}
	}
}

func TestFusedOverlapping(t *testing.T) {
	for _, dt := range floatTypes {
		t.Run(dt.String(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(2, 3))
			shape := []int64{40, 50}
			f := newFixture(rng, Weight{Name: "q", DType: dt, Shape: shape}, Weight{Name: "k", DType: dt, Shape: shape}, Weight{Name: "v", DType: dt, Shape: []int64{7}})
			mk := func(sem adapter.Semantics, vdt tensor.DType, names ...string) *adapter.Adapter {
				a := &adapter.Adapter{Name: fmt.Sprint(names), Semantics: sem, DefaultAlpha: 1}
				for _, n := range names {
					sh := shape
					if n == "v" {
						sh = []int64{7}
					}
					a.Tensors = append(a.Tensors, randomTensor(n, dt, vdt, sh, 0.4, rng))
				}
				return a
			}
			a := mk(adapter.Overwrite, dt, "q", "k")
			b := mk(adapter.Delta, tensor.Float32, "q", "v")
			c := mk(adapter.Overwrite, tensor.BFloat16, "q", "k", "v")
			cfgs := []Config{{a, 1}, {b, 0.7}, {c, 1}}
			p, err := New(f.weights, WithWorkers(3))
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Set(cfgs...); err != nil {
				t.Fatal(err)
			}
			f.checkRef(t, "set fused", cfgs)
			// Apply one by one gives the same.
			p.Revert()
			for i, c := range cfgs {
				if err := p.Apply(c); err != nil {
					t.Fatal(err)
				}
				f.checkRef(t, fmt.Sprintf("apply %d", i), cfgs[:i+1])
			}
			if got := p.Active(); len(got) != 3 || got[1] != cfgs[1] {
				t.Fatalf("Active = %v", got)
			}
			// FuseInto on a copy gives the same bytes.
			cp := make([]Weight, len(f.weights))
			for i, w := range f.weights {
				w.Data = append([]byte(nil), f.base[i]...)
				cp[i] = w
			}
			if err := FuseInto(cp, cfgs); err != nil {
				t.Fatal(err)
			}
			for i := range cp {
				if string(cp[i].Data) != string(f.weights[i].Data) {
					t.Fatalf("FuseInto differs for %q", cp[i].Name)
				}
			}
			p.Revert()
			f.checkBase(t, "revert fused")
		})
	}
}

func TestSwitchEqualsFresh(t *testing.T) {
	for _, dt := range floatTypes {
		rng := rand.New(rand.NewPCG(4, 5))
		specs := []Weight{{Name: "a", DType: dt, Shape: []int64{30, 30}}, {Name: "b", DType: dt, Shape: []int64{30, 30}}, {Name: "c", DType: dt, Shape: []int64{5, 5}}}
		f := newFixture(rng, specs...)
		A := &adapter.Adapter{Semantics: adapter.Overwrite, Tensors: []adapter.Tensor{
			randomTensor("a", dt, dt, []int64{30, 30}, 0.1, rng), randomTensor("c", dt, dt, []int64{5, 5}, 0.5, rng)}}
		B := &adapter.Adapter{Semantics: adapter.Delta, Tensors: []adapter.Tensor{
			randomTensor("b", dt, dt, []int64{30, 30}, 0.1, rng), randomTensor("c", dt, dt, []int64{5, 5}, 0.5, rng)}}
		p, _ := New(f.weights)
		steps := [][]Config{{{A, 1}}, {{B, 1}}, {{B, 1}}, {{A, 1}, {B, 0.5}}, {{A, 1}, {B, 1}}, {{B, 1}, {A, 1}}, {{A, 0.5}}, {}, {{A, 1}}}
		for i, s := range steps {
			if err := p.Set(s...); err != nil {
				t.Fatal(err)
			}
			f.checkRef(t, fmt.Sprintf("%v step %d", dt, i), s)
		}
		p.Revert()
		f.checkBase(t, "revert")
	}
}

func TestInvalidLeavesWeightsUntouched(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 7))
	shape := []int64{8, 8}
	f := newFixture(rng, Weight{Name: "layer.0.attn.q_proj", DType: tensor.Float32, Shape: shape}, Weight{Name: "layer.0.attn.k_proj", DType: tensor.Float16, Shape: shape})
	f.weights[0].BaseSHA256 = [32]byte{1, 2, 3}
	good := &adapter.Adapter{Name: "good", Semantics: adapter.Overwrite, ModelFingerprint: "abc", Tensors: []adapter.Tensor{
		randomTensor("layer.0.attn.q_proj", tensor.Float32, tensor.Float32, shape, 0.3, rng),
		randomTensor("layer.0.attn.k_proj", tensor.Float16, tensor.Float32, shape, 0.3, rng)}}
	mkBad := func(mod func(a *adapter.Adapter)) *adapter.Adapter {
		a := &adapter.Adapter{Name: "bad", Semantics: adapter.Delta, Tensors: []adapter.Tensor{
			randomTensor("layer.0.attn.k_proj", tensor.Float16, tensor.Float16, shape, 0.5, rng),
			randomTensor("layer.0.attn.q_proj", tensor.Float32, tensor.Float32, shape, 0.5, rng)}}
		mod(a)
		return a
	}
	cases := []struct {
		name  string
		cfg   Config
		is    error
		wants []string
	}{
		{"unknown name", Config{mkBad(func(a *adapter.Adapter) { a.Tensors[1].Name = "layer.0.attn.q_prj" }), 1}, ErrUnknownTarget, []string{`"layer.0.attn.q_prj"`, `did you mean "layer.0.attn.q_proj"`}},
		{"far name", Config{mkBad(func(a *adapter.Adapter) { a.Tensors[1].Name = "zzz" }), 1}, ErrUnknownTarget, []string{"none similar"}},
		{"out of range", Config{mkBad(func(a *adapter.Adapter) { a.Tensors[1].Indices[len(a.Tensors[1].Indices)-1] = 64 }), 1}, ErrConfig, []string{"out of range"}},
		{"unsorted", Config{mkBad(func(a *adapter.Adapter) { ix := a.Tensors[1].Indices; ix[0], ix[1] = ix[1], ix[0] }), 1}, ErrConfig, []string{"strictly increasing"}},
		{"dtype", Config{mkBad(func(a *adapter.Adapter) { a.Tensors[1].DType = tensor.Float16 }), 1}, ErrMismatch, []string{"dtype float16", "weight is float32"}},
		{"shape", Config{mkBad(func(a *adapter.Adapter) { a.Tensors[1].Shape = []int64{4, 16} }), 1}, ErrMismatch, []string{"[4 16]"}},
		{"fingerprint", Config{mkBad(func(a *adapter.Adapter) { a.Tensors[1].BaseSHA256 = [32]byte{9} }), 1}, ErrFingerprint, []string{"0900", "010203"}},
		{"model fingerprint", Config{mkBad(func(a *adapter.Adapter) { a.ModelFingerprint = "def" }), 1}, ErrFingerprint, []string{"def", "ABC"}},
		{"alpha nan", Config{mkBad(func(a *adapter.Adapter) {}), float32(math.NaN())}, ErrConfig, []string{"not finite"}},
		{"alpha inf", Config{mkBad(func(a *adapter.Adapter) {}), float32(math.Inf(1))}, ErrConfig, []string{"not finite"}},
		{"nil adapter", Config{nil, 1}, ErrConfig, []string{"no adapter"}},
		{"values length", Config{mkBad(func(a *adapter.Adapter) { a.Tensors[1].Values = a.Tensors[1].Values[:4] }), 1}, ErrConfig, []string{"values"}},
		{"value dtype", Config{mkBad(func(a *adapter.Adapter) { a.Tensors[1].ValueDType = tensor.Int32 }), 1}, ErrConfig, []string{"value dtype"}},
		{"semantics", Config{mkBad(func(a *adapter.Adapter) { a.Semantics = 9 }), 1}, ErrConfig, []string{"semantics"}},
		{"two tensors one weight", Config{mkBad(func(a *adapter.Adapter) {
			a.Tensors = append(a.Tensors, a.Tensors[1])
		}), 1}, ErrConfig, []string{"two tensors"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := New(f.weights, WithModelFingerprint("ABC"))
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Set(Config{good, 1}); err != nil {
				t.Fatal(err)
			}
			snap := f.snapshot()
			for _, try := range []func() error{
				func() error { return p.Validate(c.cfg) },
				func() error { return p.Set(c.cfg) },
				func() error { return p.Set(Config{good, 0.5}, c.cfg) },
				func() error { return p.Apply(c.cfg) },
			} {
				err := try()
				if !errors.Is(err, c.is) {
					t.Fatalf("got %v, want %v", err, c.is)
				}
				for _, w := range c.wants {
					if !strings.Contains(err.Error(), w) {
						t.Fatalf("error %q does not mention %q", err, w)
					}
				}
				f.checkSnapshot(t, "after error", snap)
				if a := p.Active(); len(a) != 1 || a[0].Adapter != good {
					t.Fatalf("active changed: %v", a)
				}
			}
			p.Revert()
			f.checkBase(t, "revert")
		})
	}
	// WithoutFingerprintCheck accepts the fingerprint cases.
	p, _ := New(f.weights, WithoutFingerprintCheck(), WithModelFingerprint("abc"))
	if err := p.Set(Config{mkBad(func(a *adapter.Adapter) { a.Tensors[1].BaseSHA256 = [32]byte{9}; a.ModelFingerprint = "x" }), 1}); err != nil {
		t.Fatal(err)
	}
	p.Revert()
	f.checkBase(t, "revert")
}

func TestNewErrors(t *testing.T) {
	ok := tensor.Bytes(make([]int64, 2))
	for _, c := range []struct {
		name string
		ws   []Weight
	}{
		{"no name", []Weight{{DType: tensor.Float32, Shape: []int64{4}, Data: ok}}},
		{"dup", []Weight{{Name: "a", DType: tensor.Float32, Shape: []int64{4}, Data: ok}, {Name: "a", DType: tensor.Float32, Shape: []int64{4}, Data: ok}}},
		{"dtype", []Weight{{Name: "a", DType: tensor.Int32, Shape: []int64{4}, Data: ok}}},
		{"length", []Weight{{Name: "a", DType: tensor.Float32, Shape: []int64{5}, Data: ok}}},
		{"shape", []Weight{{Name: "a", DType: tensor.Float32, Shape: []int64{-4}, Data: ok}}},
		{"unaligned", []Weight{{Name: "a", DType: tensor.Float32, Shape: []int64{3}, Data: ok[1:13]}}},
	} {
		if _, err := New(c.ws); !errors.Is(err, ErrWeight) {
			t.Errorf("%s: New = %v", c.name, err)
		}
	}
}

// TestCorruptedFile decodes every single-byte corruption of a small file:
// Decode must not panic; when it fails, or when Set refuses the result,
// the weights stay bit-identical.
func TestCorruptedFile(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	shape := []int64{6, 6}
	f := newFixture(rng, Weight{Name: "w", DType: tensor.Float16, Shape: shape}, Weight{Name: "x", DType: tensor.Float32, Shape: shape})
	a := &adapter.Adapter{Name: "a", DefaultAlpha: 1, Tensors: []adapter.Tensor{
		finiteValues(randomTensor("w", tensor.Float16, tensor.Float16, shape, 0.3, rng)), finiteValues(randomTensor("x", tensor.Float32, tensor.Float32, shape, 0.3, rng))}}
	file, err := adapter.Encode(a)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := New(f.weights)
	decodeErr, setErr, applied := 0, 0, 0
	for i := range file {
		for _, x := range []byte{0x01, 0x10, 0xff} {
			c := append([]byte(nil), file...)
			c[i] ^= x
			bad, err := adapter.Decode(c)
			if err != nil {
				decodeErr++
				continue
			}
			if err := p.Set(Default(bad)); err != nil {
				setErr++
				f.checkBase(t, fmt.Sprintf("byte %d ^ %#x", i, x))
				continue
			}
			applied++ // a value or name byte changed: still a valid adapter
			p.Revert()
			f.checkBase(t, fmt.Sprintf("revert after byte %d ^ %#x", i, x))
		}
	}
	t.Logf("%d bytes: %d rejected by Decode, %d by Set, %d valid variants applied and reverted", len(file), decodeErr, setErr, applied)
	if decodeErr == 0 || setErr == 0 || applied == 0 {
		t.Fatal("some outcome never happened: the corruptions did not exercise every path")
	}
}

// TestPropertyRandomSequences runs random Set/Apply/Revert sequences,
// checks each state against the dense reference and ends bit-exact at base.
func TestPropertyRandomSequences(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 42))
		var specs []Weight
		for i := range 1 + rng.IntN(5) {
			specs = append(specs, Weight{Name: fmt.Sprint("w", i), DType: floatTypes[rng.IntN(3)], Shape: []int64{int64(1 + rng.IntN(20)), int64(1 + rng.IntN(20))}})
		}
		f := newFixture(rng, specs...)
		var pool []*adapter.Adapter
		for range 4 {
			a := &adapter.Adapter{Semantics: adapter.Semantics(rng.IntN(2)), DefaultAlpha: 1}
			for _, w := range specs {
				if rng.IntN(3) > 0 {
					a.Tensors = append(a.Tensors, randomTensor(w.Name, w.DType, floatTypes[rng.IntN(3)], w.Shape, rng.Float64()*0.5, rng))
				}
			}
			pool = append(pool, a)
		}
		alphas := []float32{1, 1, 0.5, -1, 2.5}
		randCfg := func() Config { return Config{pool[rng.IntN(len(pool))], alphas[rng.IntN(len(alphas))]} }
		p, _ := New(f.weights, WithWorkers(1+rng.IntN(4)))
		var active []Config
		for step := range 30 {
			switch rng.IntN(3) {
			case 0:
				var cfgs []Config
				for range rng.IntN(4) {
					cfgs = append(cfgs, randCfg())
				}
				if err := p.Set(cfgs...); err != nil {
					t.Fatal(err)
				}
				active = cfgs
			case 1:
				c := randCfg()
				if err := p.Apply(c); err != nil {
					t.Fatal(err)
				}
				active = append(active, c)
			case 2:
				p.Revert()
				active = nil
			}
			f.checkRef(t, fmt.Sprintf("seed %d step %d", seed, step), active)
		}
		p.Revert()
		f.checkBase(t, fmt.Sprintf("seed %d final revert", seed))
	}
}
