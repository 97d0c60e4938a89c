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

// allocated returns the bytes f allocates on the heap.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
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

// A few entries in a tensor declaring a huge shape cost memory by what
// the adapters hold, not by the declared dimensions (a 200-byte file
// declaring [1, 2^36] used to make overlap ask for 512 GB).
func TestHugeDeclaredShapeBoundedMemory(t *testing.T) {
	for _, m := range []int64{1 << 24, 1 << 31, 1 << 36} {
		shape := []int64{1, m}
		a := rowAdapter(t, "a", shape, []uint32{1, 1 << 20}, 2)
		b := rowAdapter(t, "b", shape, []uint32{1, 5, 1 << 20}, 3)
		var per []overlap.Pair
		var err error
		n := allocated(func() {
			per, _, err = overlap.Compare(context.Background(), []*adapter.Adapter{a, b}, overlap.Options{})
		})
		if err != nil {
			t.Fatal(err)
		}
		if n > 1<<20 {
			t.Fatalf("shape %v: Compare of 2 and 3 entries allocated %d bytes", shape, n)
		}
		// AᵀB is the outer product of a = (2, 2) and b = (3, 3, 3) on
		// columns {1, 2^20} × {1, 5, 2^20}: σ = ‖a‖‖b‖ = √8·√27.
		p := per[0]
		if want := math.Sqrt(8 * 27); math.Abs(p.AWOM-want) > 1e-9*want || math.Abs(p.AWOMFro-want) > 1e-9*want ||
			p.ProductNNZ != 6 || p.Shared != 2 || p.M != m {
			t.Fatalf("shape %v: %+v, want AWOM = AWOMFro = %g, ProductNNZ 6, Shared 2", shape, p, want)
		}
	}
}

// Two adapters filling one row: the product AᵀB has k² non-zeros, yet
// Compare allocates O(k), not O(k²).
func TestDenseRowProductBoundedMemory(t *testing.T) {
	const k = 1024
	cols := make([]uint32, k)
	for i := range cols {
		cols[i] = uint32(i)
	}
	a := rowAdapter(t, "a", []int64{4, k}, cols, 1)
	b := rowAdapter(t, "b", []int64{4, k}, cols, -0.5)
	var per []overlap.Pair
	var err error
	n := allocated(func() {
		per, _, err = overlap.Compare(context.Background(), []*adapter.Adapter{a, b}, overlap.Options{})
	})
	if err != nil {
		t.Fatal(err)
	}
	if n > 1<<20 {
		t.Fatalf("Compare of two %d-entry rows allocated %d bytes", k, n)
	}
	p := per[0]
	if want := 0.5 * k; math.Abs(p.AWOM-want) > 1e-9*want || math.Abs(p.AWOMFro-want) > 1e-9*want || p.ProductNNZ != k*k || p.AWOR != 0 {
		t.Fatalf("%+v, want AWOM = AWOMFro = %g, ProductNNZ %d, AWOR 0", p, want, k*k)
	}
}

// A cancelled context stops a large product.
func TestCompareCancelled(t *testing.T) {
	const k = 4096
	cols := make([]uint32, k)
	for i := range cols {
		cols[i] = uint32(i)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	a, b := rowAdapter(t, "a", []int64{1, k}, cols, 1), rowAdapter(t, "b", []int64{1, k}, cols, 1)
	if _, _, err := overlap.Compare(ctx, []*adapter.Adapter{a, b}, overlap.Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Compare with a cancelled context: %v", err)
	}
}
