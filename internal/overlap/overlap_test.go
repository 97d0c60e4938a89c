package overlap_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"runtime"
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
	per, all, err := overlap.Compare(context.Background(), []*adapter.Adapter{a, b}, overlap.Options{})
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
	per, _, err := overlap.Compare(context.Background(), []*adapter.Adapter{mk("a", 0), mk("b", 3)}, overlap.Options{})
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
	if _, _, err := overlap.Compare(context.Background(), []*adapter.Adapter{a, b}, overlap.Options{}); err == nil {
		t.Fatal("overwrite adapter without base accepted")
	}
}

// comparePairBounded compares a and b, fails the test when that allocates
// more than 1 MiB, and returns their one per-tensor pair.
func comparePairBounded(t *testing.T, a, b *adapter.Adapter) overlap.Pair {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	per, _, err := overlap.Compare(context.Background(), []*adapter.Adapter{a, b}, overlap.Options{})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Fatalf("Compare of %d and %d entries (shape %v) allocated %d bytes", a.NNZ(), b.NNZ(), a.Tensors[0].Shape, n)
	}
	return per[0]
}

// checkRankOne fails unless p is the pair of a rank-one product AᵀB with
// singular value sigma and nnz non-zeros.
func checkRankOne(t *testing.T, p overlap.Pair, sigma float64, nnz int64) {
	t.Helper()
	if math.Abs(p.AWOM-sigma) > 1e-9*sigma || math.Abs(p.AWOMFro-sigma) > 1e-9*sigma || p.ProductNNZ != nnz {
		t.Fatalf("%+v, want AWOM = AWOMFro = %g, ProductNNZ %d", p, sigma, nnz)
	}
}

// rowAdapter is an adapter whose tensor "w" of the given shape touches
// entries cols of row 0, all with value v.
func rowAdapter(t *testing.T, name string, shape []int64, cols []uint32, v float32) *adapter.Adapter {
	t.Helper()
	vals := make([]float32, len(cols))
	for i := range vals {
		vals[i] = v
	}
	at, err := adapter.NewTensor("w", tensor.Float32, shape, cols, vals, tensor.Float32)
	if err != nil {
		t.Fatal(err)
	}
	return &adapter.Adapter{Name: name, DefaultAlpha: 1, Semantics: adapter.Delta, Tensors: []adapter.Tensor{at}}
}

// firstCols returns 0, 1, ..., k-1.
func firstCols(k int) []uint32 {
	cols := make([]uint32, k)
	for i := range cols {
		cols[i] = uint32(i)
	}
	return cols
}

// A few entries in a tensor declaring a huge shape cost memory by what
// the adapters hold, not by the declared dimensions (a 200-byte file
// declaring [1, 2^36] used to make overlap ask for 512 GB).
func TestHugeDeclaredShapeBoundedMemory(t *testing.T) {
	for _, m := range []int64{1 << 24, 1 << 31, 1 << 36} {
		shape := []int64{1, m}
		p := comparePairBounded(t, rowAdapter(t, "a", shape, []uint32{1, 1 << 20}, 2), rowAdapter(t, "b", shape, []uint32{1, 5, 1 << 20}, 3))
		// AᵀB is the outer product of a = (2, 2) and b = (3, 3, 3) on
		// columns {1, 2^20} × {1, 5, 2^20}: σ = ‖a‖‖b‖ = √8·√27.
		checkRankOne(t, p, math.Sqrt(8*27), 6)
		if p.Shared != 2 || p.M != m {
			t.Fatalf("shape %v: shared %d, M %d", shape, p.Shared, p.M)
		}
	}
}

// Two adapters filling one row: the product AᵀB has k² non-zeros, yet
// Compare allocates O(k), not O(k²).
func TestDenseRowProductBoundedMemory(t *testing.T) {
	const k = 1024
	p := comparePairBounded(t, rowAdapter(t, "a", []int64{4, k}, firstCols(k), 1), rowAdapter(t, "b", []int64{4, k}, firstCols(k), -0.5))
	checkRankOne(t, p, 0.5*k, k*k)
	if p.AWOR != 0 {
		t.Fatalf("AWOR %g, want 0", p.AWOR)
	}
}

// A cancelled context stops a large product.
func TestCompareCancelled(t *testing.T) {
	const k = 4096
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	a, b := rowAdapter(t, "a", []int64{1, k}, firstCols(k), 1), rowAdapter(t, "b", []int64{1, k}, firstCols(k), 1)
	if _, _, err := overlap.Compare(ctx, []*adapter.Adapter{a, b}, overlap.Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Compare with a cancelled context: %v", err)
	}
}
