package patch

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/testutil"
	"github.com/shira-ort/shira-ort/tensor"
)

// widenBytes returns the float32 bytes of the float16 or bfloat16 data b.
func widenBytes(dt tensor.DType, b []byte) []byte {
	h := tensor.Uint16s(b)
	out := make([]float32, len(h))
	for i, v := range h {
		out[i] = half(dt, v)
	}
	return tensor.Bytes(out)
}

// TestWidenedMatchesNarrow: a Widened weight (float16 or bfloat16 values
// stored as float32) goes through 2 000 random Set / Apply / Revert steps
// (overwrite and delta adapters, every value dtype, random α, fused
// configurations, chunk sizes down to 1) in lockstep with the same weight
// stored narrow; after every step the widened buffer holds exactly the
// narrow buffer's values widened, NaN payloads included, and Revert gives
// the widened base back bit for bit.
func TestWidenedMatchesNarrow(t *testing.T) {
	testutil.Replace(t, &chunkEntries, chunkEntries)
	testutil.Replace(t, &switchBlock, switchBlock)
	rng := rand.New(rand.NewPCG(5, 55))
	for round := range 20 {
		var narrow, wide []Weight
		for i := range 1 + rng.IntN(3) {
			dt := []tensor.DType{tensor.Float16, tensor.BFloat16}[rng.IntN(2)]
			shape := []int64{int64(1 + rng.IntN(20)), int64(1 + rng.IntN(20))}
			n, _ := tensor.NumElements(shape)
			data := randomData(dt, n, rng)
			name := fmt.Sprint("w", i)
			narrow = append(narrow, Weight{Name: name, DType: dt, Shape: shape, Data: data})
			wide = append(wide, Weight{Name: name, DType: dt, Shape: shape, Data: widenBytes(dt, data), Widened: true})
		}
		base := make([][]byte, len(wide))
		for i, w := range wide {
			base[i] = bytes.Clone(w.Data)
		}
		var pool []*adapter.Adapter
		for range 4 {
			a := &adapter.Adapter{Semantics: adapter.Semantics(rng.IntN(2)), DefaultAlpha: 1}
			for _, w := range narrow {
				if rng.IntN(3) > 0 {
					a.Tensors = append(a.Tensors, randomTensor(w.Name, w.DType, floatTypes[rng.IntN(3)], w.Shape, 0.05+rng.Float64()*0.6, rng))
				}
			}
			pool = append(pool, a)
		}
		pn, err := New(narrow)
		if err != nil {
			t.Fatal(err)
		}
		pw, err := New(wide)
		if err != nil {
			t.Fatal(err)
		}
		chunkEntries = []int{1, 3, 1 << 15}[rng.IntN(3)]
		switchBlock = []int{1, 5, 2048}[rng.IntN(3)]
		alphas := []float32{1, 1, 0.5, -1, 3}
		for step := range 100 {
			cfg := func() Config { return Config{pool[rng.IntN(len(pool))], alphas[rng.IntN(len(alphas))]} }
			switch rng.IntN(4) {
			case 0, 1:
				var cfgs []Config
				for range rng.IntN(4) {
					cfgs = append(cfgs, cfg())
				}
				if err, err2 := pn.Set(cfgs...), pw.Set(cfgs...); err != nil || err2 != nil {
					t.Fatal(err, err2)
				}
			case 2:
				c := cfg()
				if err, err2 := pn.Apply(c), pw.Apply(c); err != nil || err2 != nil {
					t.Fatal(err, err2)
				}
			case 3:
				pn.Revert()
				pw.Revert()
			}
			for i := range wide {
				if got, want := wide[i].Data, widenBytes(narrow[i].DType, narrow[i].Data); !bytes.Equal(got, want) {
					g, w := tensor.Float32s(got), tensor.Float32s(want)
					for k := range g {
						if math.Float32bits(g[k]) != math.Float32bits(w[k]) {
							t.Fatalf("round %d step %d %v weight %d: element %d is %#x, want %#x", round, step, narrow[i].DType, i, k, math.Float32bits(g[k]), math.Float32bits(w[k]))
						}
					}
				}
			}
		}
		pw.Revert()
		for i := range wide {
			if !bytes.Equal(wide[i].Data, base[i]) {
				t.Fatalf("round %d: Revert did not restore the widened base of weight %d", round, i)
			}
		}
	}
}

// TestWidenedNew: Widened is refused for float32 weights and needs 4
// bytes per element.
func TestWidenedNew(t *testing.T) {
	if _, err := New([]Weight{{Name: "w", DType: tensor.Float32, Shape: []int64{2}, Data: make([]byte, 8), Widened: true}}); err == nil {
		t.Fatal("a widened float32 weight was accepted")
	}
	if _, err := New([]Weight{{Name: "w", DType: tensor.Float16, Shape: []int64{2}, Data: make([]byte, 4), Widened: true}}); err == nil {
		t.Fatal("a widened float16 weight with 2 bytes per element was accepted")
	}
	if _, err := New([]Weight{{Name: "w", DType: tensor.Float16, Shape: []int64{2}, Data: make([]byte, 8), Widened: true}}); err != nil {
		t.Fatal(err)
	}
}
