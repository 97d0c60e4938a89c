package sessionbench

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/tensor"
)

// RandomAdapter overwrites about density of every exposed weight of the
// exported directory with random values (SHiRA-like, fixed seed).
func RandomAdapter(exported string, density float64, seed uint64) (*adapter.Adapter, error) {
	em, err := export.Open(exported)
	if err != nil {
		return nil, fmt.Errorf("sessionbench: %w", err)
	}
	defer em.Close()
	m := em.Manifest()
	rng := rand.New(rand.NewPCG(seed, 9))
	gap := max(1, int(2/density)) // mean index gap ≈ 1/density
	a := &adapter.Adapter{Name: fmt.Sprintf("random-%d", seed), DefaultAlpha: 1, Semantics: adapter.Overwrite,
		ModelFingerprint: m.Fingerprint}
	for _, e := range m.Tensors {
		n, _ := tensor.NumElements(e.Shape)
		var ix []uint32
		var vals []float32
		// The generators' weight scale (uniform in ±1/√rows), so the adapted
		// model stays as well-conditioned as the base one.
		scale := float32(1)
		if len(e.Shape) > 0 && e.Shape[0] > 0 {
			scale = float32(1 / math.Sqrt(float64(e.Shape[0])))
		}
		for i := rng.IntN(gap); i < n; i += 1 + rng.IntN(gap) {
			ix = append(ix, uint32(i))
			vals = append(vals, (rng.Float32()*2-1)*scale)
		}
		t, err := adapter.NewTensor(e.Name, e.DType, e.Shape, ix, vals, tensor.Float32)
		if err != nil {
			return nil, fmt.Errorf("sessionbench: %w", err)
		}
		a.Tensors = append(a.Tensors, t)
	}
	return a, nil
}
