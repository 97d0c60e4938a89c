package patch

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/testutil"
)

// TestChunkedParallel runs random configurations with tiny chunks and
// parallel phases forced on, checking every state against the reference.
func TestChunkedParallel(t *testing.T) {
	testutil.Replace(t, &chunkEntries, 5)
	testutil.Replace(t, &serialWork, 0)
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
