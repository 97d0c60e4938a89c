package overlap_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/mask"
	"github.com/shira-ort/shira-ort/internal/overlap"
	"github.com/shira-ort/shira-ort/tensor"
)

func randomAdapter(t *testing.T, name string, rows, cols, k int, seed uint64, alpha float32) (*adapter.Adapter, *mat.Dense) {
	rng := rand.New(rand.NewPCG(seed, 7))
	idx, err := mask.Random(rows*cols, k, rng)
	if err != nil {
		t.Fatal(err)
	}
	vals := make([]float32, k)
	dense := mat.NewDense(rows, cols, nil)
	for i, j := range idx {
		vals[i] = float32(rng.NormFloat64())
		dense.Set(int(j)/cols, int(j)%cols, float64(alpha)*float64(vals[i]))
	}
	at, err := adapter.NewTensor("w", tensor.Float32, []int64{int64(rows), int64(cols)}, idx, vals, tensor.Float32)
	if err != nil {
		t.Fatal(err)
	}
	return &adapter.Adapter{Name: name, DefaultAlpha: alpha, Semantics: adapter.Delta, Tensors: []adapter.Tensor{at}}, dense
}

// The sparse computation agrees with dense AᵀB, its SVD and its zero count.
func TestCompareMatchesDense(t *testing.T) {
	const rows, cols = 40, 30
	a, da := randomAdapter(t, "a", rows, cols, 60, 1, 1)
	b, db := randomAdapter(t, "b", rows, cols, 90, 2, 0.5)
	per, all, err := overlap.Compare([]*adapter.Adapter{a, b}, overlap.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(per) != 1 || len(all) != 1 {
		t.Fatalf("%d per-tensor, %d overall", len(per), len(all))
	}
	var p mat.Dense
	p.Mul(da.T(), db)
	var svd mat.SVD
	svd.Factorize(&p, mat.SVDNone)
	spec := svd.Values(nil)[0]
	nz := 0
	for i := 0; i < cols; i++ {
		for j := 0; j < cols; j++ {
			if p.At(i, j) != 0 {
				nz++
			}
		}
	}
	got := per[0]
	t.Logf("shared %d, AWOM %.6g (dense %.6g), fro %.6g, AWOR %.4f", got.Shared, got.AWOM, spec, got.AWOMFro, got.AWOR)
	if math.Abs(got.AWOM-spec) > 1e-9*spec {
		t.Errorf("AWOM %g, dense SVD %g", got.AWOM, spec)
	}
	if math.Abs(got.AWOMFro-mat.Norm(&p, 2)) > 1e-9*got.AWOMFro {
		t.Errorf("Frobenius %g, dense %g", got.AWOMFro, mat.Norm(&p, 2))
	}
	if want := 1 - float64(nz)/float64(cols*cols); got.AWOR != want {
		t.Errorf("AWOR %g, want %g", got.AWOR, want)
	}
}

// The paper's Lemma 4.5 setting: disjoint rows give AᵀB = 0, AWOR 1.
func TestDisjointRowsOrthogonal(t *testing.T) {
	mk := func(name string, row int64) *adapter.Adapter {
		var idx []uint32
		var vals []float32
		for c := int64(0); c < 8; c++ {
			idx = append(idx, uint32(row*8+c))
			vals = append(vals, 1)
		}
		at, _ := adapter.NewTensor("w", tensor.Float32, []int64{8, 8}, idx, vals, tensor.Float32)
		return &adapter.Adapter{Name: name, DefaultAlpha: 1, Semantics: adapter.Delta, Tensors: []adapter.Tensor{at}}
	}
	per, _, err := overlap.Compare([]*adapter.Adapter{mk("a", 0), mk("b", 3)}, overlap.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p := per[0]; p.Shared != 0 || p.AWOM != 0 || p.AWOR != 1 {
		t.Fatalf("%+v", p)
	}
}

func TestOverwriteNeedsBase(t *testing.T) {
	a, _ := randomAdapter(t, "a", 4, 4, 3, 1, 1)
	b, _ := randomAdapter(t, "b", 4, 4, 3, 2, 1)
	b.Semantics = adapter.Overwrite
	if _, _, err := overlap.Compare([]*adapter.Adapter{a, b}, overlap.Options{}); err == nil {
		t.Fatal("overwrite adapter without base accepted")
	}
}
