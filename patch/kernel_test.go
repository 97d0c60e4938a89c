package patch

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/tensor"
)

// checkF32to16 compares f32to16 with tensor.Float32ToFloat16 on bits u.
func checkF32to16(t *testing.T, u uint32) bool {
	f := math.Float32frombits(u)
	if got, want := f32to16(f), tensor.Float32ToFloat16(f); got != want {
		t.Errorf("f32to16(%#08x) = %#04x, want %#04x", u, got, want)
		return false
	}
	return true
}

// TestF32to16 checks the inlined converter around every float16 value
// (the value, its midpoints and neighbours) and on random bits. Set
// SHIRA_EXHAUSTIVE=1 to check all 2^32 inputs (about a minute).
func TestF32to16(t *testing.T) {
	if os.Getenv("SHIRA_EXHAUSTIVE") != "" {
		for u := uint64(0); u < 1<<32; u++ {
			if !checkF32to16(t, uint32(u)) {
				return
			}
		}
		return
	}
	for h := range 1 << 16 {
		f := tensor.Float16ToFloat32(uint16(h))
		u := math.Float32bits(f)
		for _, d := range []int32{-1 << 13, -1<<12 - 1, -1 << 12, -1<<12 + 1, -1, 0, 1, 1<<12 - 1, 1 << 12, 1<<12 + 1} {
			if !checkF32to16(t, uint32(int32(u)+d)) {
				return
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1 << 20 {
		if !checkF32to16(t, rng.Uint32()) {
			return
		}
	}
	for i := range 1 << 16 {
		if got, want := math.Float32bits(f16Table()[i]), math.Float32bits(tensor.Float16ToFloat32(uint16(i))); got != want {
			t.Fatalf("f16Table[%#04x] = %#08x, want %#08x", i, got, want)
		}
	}
}

// TestChunkedParallel runs random configurations with tiny chunks and
// parallel phases forced on, checking every state against the reference.
func TestChunkedParallel(t *testing.T) {
	defer func(c, s int) { chunkEntries, serialWork = c, s }(chunkEntries, serialWork)
	chunkEntries, serialWork = 5, 0
	for seed := range uint64(10) {
		rng := rand.New(rand.NewPCG(seed, 7))
		var specs []Weight
		for i := range 1 + rng.IntN(4) {
			specs = append(specs, Weight{Name: fmt.Sprint("w", i), DType: floatTypes[rng.IntN(3)], Shape: []int64{int64(1 + rng.IntN(40)), int64(1 + rng.IntN(40))}})
		}
		f := newFixture(rng, specs...)
		var pool []*adapter.Adapter
		for range 4 {
			a := &adapter.Adapter{Semantics: adapter.Semantics(rng.IntN(2)), DefaultAlpha: 1}
			for _, w := range specs {
				if rng.IntN(4) > 0 {
					a.Tensors = append(a.Tensors, randomTensor(w.Name, w.DType, floatTypes[rng.IntN(3)], w.Shape, rng.Float64()*0.6, rng))
				}
			}
			pool = append(pool, a)
		}
		alphas := []float32{1, 1, 1, 0.5, -2}
		p, _ := New(f.weights, WithWorkers(2+rng.IntN(3)))
		for step := range 25 {
			var cfgs []Config
			for range rng.IntN(4) {
				cfgs = append(cfgs, Config{pool[rng.IntN(len(pool))], alphas[rng.IntN(len(alphas))]})
			}
			if err := p.Set(cfgs...); err != nil {
				t.Fatal(err)
			}
			f.checkRef(t, fmt.Sprintf("seed %d step %d", seed, step), cfgs)
		}
		p.Revert()
		f.checkBase(t, fmt.Sprintf("seed %d final revert", seed))
	}
}
