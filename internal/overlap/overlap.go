// Package overlap measures how much SHiRA adapters interfere when fused:
// per tensor and overall, the overlap of their index sets and the SHiRA
// paper's weight-orthogonality measures for each pair of adapters,
//
//	AWOM = ‖A₁ᵀA₂‖₂          (spectral norm; the Frobenius norm is reported too)
//	AWOR = 1 − ‖A₁ᵀA₂‖₀ / m²  (fraction of zero entries of the m×m product)
//
// where A₁, A₂ are the adapters' sparse delta matrices ([rows, m], the
// exposed tensor's layout, scaled by each adapter's default alpha). The
// product is formed sparsely: only rows touched by both adapters
// contribute, so the cost is Σ_rows nnz₁(row)·nnz₂(row), never m², and
// memory is bounded by the adapters' entries, never by declared shapes.
package overlap

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/tensor"
)

// Pair is the comparison of two adapters on one tensor (or overall).
type Pair struct {
	A, B   int    `json:"-"`
	NameA  string `json:"a"`
	NameB  string `json:"b"`
	Tensor string `json:"tensor,omitempty"`
	// NNZA, NNZB and Shared count the indices of each and of both.
	NNZA, NNZB, Shared int
	// Jaccard is Shared / |A ∪ B|.
	Jaccard float64
	// AWOM is ‖AᵀB‖₂ (largest singular value), AWOMFro ‖AᵀB‖_F.
	AWOM, AWOMFro float64
	// ProductNNZ is ‖AᵀB‖₀ and AWOR = 1 − ProductNNZ/m².
	ProductNNZ int64
	M          int64
	AWOR       float64
}

// Options tune Compare.
type Options struct {
	// Base returns the base weight of a tensor as float32, needed for
	// overwrite-semantics adapters (their delta is v − base). nil: such
	// adapters are an error.
	Base func(name string) ([]float32, error)
	// PowerIterations bounds the spectral-norm iteration (default 100).
	PowerIterations int
}

// Compare returns, for every pair of adapters and every tensor both touch,
// a Pair, plus one overall Pair per adapter pair (Tensor ""), where counts
// add up, AWOMFro is the root of the summed squares, AWOM the largest
// per-tensor value and AWOR = 1 − ΣProductNNZ / Σm².
//
// Memory is O(nnz) of the adapters (plus what Options.Base returns),
// whatever shapes they declare; time is that of the sparse product,
// Σ_rows nnz₁(row)·nnz₂(row) per tensor. A cancelled ctx stops the product
// and returns an error wrapping ctx.Err().
func Compare(ctx context.Context, adapters []*adapter.Adapter, o Options) (perTensor, overall []Pair, err error) {
	if len(adapters) < 2 {
		return nil, nil, fmt.Errorf("overlap: need at least two adapters, got %d", len(adapters))
	}
	if o.PowerIterations <= 0 {
		o.PowerIterations = 100
	}
	for i := 0; i < len(adapters); i++ {
		for j := i + 1; j < len(adapters); j++ {
			a, b := adapters[i], adapters[j]
			tot := Pair{A: i, B: j, NameA: a.Name, NameB: b.Name}
			var fro2 float64
			var m2 float64
			for ti := range a.Tensors {
				ta := &a.Tensors[ti]
				tb := b.Tensor(ta.Name)
				if tb == nil {
					tot.NNZA += ta.NNZ()
					continue
				}
				p, err := comparePair(ctx, ta, tb, a, b, o)
				if err != nil {
					return nil, nil, err
				}
				p.A, p.B, p.NameA, p.NameB = i, j, a.Name, b.Name
				perTensor = append(perTensor, p)
				tot.NNZA += p.NNZA
				tot.NNZB += p.NNZB
				tot.Shared += p.Shared
				tot.ProductNNZ += p.ProductNNZ
				tot.AWOM = max(tot.AWOM, p.AWOM)
				fro2 += p.AWOMFro * p.AWOMFro
				m2 += float64(p.M) * float64(p.M)
			}
			for ti := range b.Tensors {
				if a.Tensor(b.Tensors[ti].Name) == nil {
					tot.NNZB += b.Tensors[ti].NNZ()
				}
			}
			tot.AWOMFro = math.Sqrt(fro2)
			if u := tot.NNZA + tot.NNZB - tot.Shared; u > 0 {
				tot.Jaccard = float64(tot.Shared) / float64(u)
			}
			tot.AWOR = 1
			if m2 > 0 {
				tot.AWOR = 1 - float64(tot.ProductNNZ)/m2
			}
			overall = append(overall, tot)
		}
	}
	return perTensor, overall, nil
}

// deltas returns t's values as deltas scaled by the adapter's alpha.
func deltas(t *adapter.Tensor, a *adapter.Adapter, o Options) ([]float64, error) {
	v, err := t.ValuesFloat32()
	if err != nil {
		return nil, err
	}
	var base []float32
	if a.Semantics == adapter.Overwrite {
		if o.Base == nil {
			return nil, fmt.Errorf("overlap: adapter %q stores overwrite values; the base model is needed to compute its deltas", a.Name)
		}
		if base, err = o.Base(t.Name); err != nil {
			return nil, err
		}
		if len(base) != t.NumElements() {
			return nil, fmt.Errorf("overlap: %s: base has %d elements, adapter shape %v", t.Name, len(base), t.Shape)
		}
	}
	out := make([]float64, len(v))
	for k, x := range v {
		d := float64(x)
		if base != nil {
			d -= float64(base[t.Indices[k]])
		}
		out[k] = float64(a.DefaultAlpha) * d
	}
	return out, nil
}

// matrix is the part of a tensor's [rows, m] matrix view that lies in
// the rows shared with the other adapter, in compressed sparse rows: row
// s (the s-th shared row) holds columns col[ptr[s]:ptr[s+1]], which index
// cols (the distinct columns present, ascending), with values
// val[ptr[s]:ptr[s+1]]. Everything is sized by the entries, never by the
// declared shape.
type matrix struct {
	ptr  []int
	col  []int
	val  []float64
	cols []uint32
}

// rowRanges returns, for a tensor's sorted indices, the rows of its
// [rows, m] view that hold entries and where each row's entries start
// (starts has one more element, len(ix)).
func rowRanges(ix []uint32, m int64) (rows []int64, starts []int) {
	for k, x := range ix {
		if r := int64(x) / m; len(rows) == 0 || rows[len(rows)-1] != r {
			rows = append(rows, r)
			starts = append(starts, k)
		}
	}
	return rows, append(starts, len(ix))
}

// sharedRows returns the positions, in ra and rb (both ascending), of the
// rows present in both.
func sharedRows(ra, rb []int64) (ia, ib []int) {
	for i, j := 0, 0; i < len(ra) && j < len(rb); {
		switch {
		case ra[i] < rb[j]:
			i++
		case ra[i] > rb[j]:
			j++
		default:
			ia, ib = append(ia, i), append(ib, j)
			i++
			j++
		}
	}
	return ia, ib
}

// restrict builds the matrix of t's entries (deltas d) in the given rows
// (positions into rowRanges' result).
func restrict(t *adapter.Tensor, d []float64, m int64, starts, rows []int) matrix {
	var mx matrix
	mx.ptr = make([]int, 1, len(rows)+1)
	for _, r := range rows {
		for k := starts[r]; k < starts[r+1]; k++ {
			mx.cols = append(mx.cols, uint32(int64(t.Indices[k])%m))
		}
		mx.ptr = append(mx.ptr, len(mx.cols))
	}
	raw := slices.Clone(mx.cols)
	slices.Sort(mx.cols)
	mx.cols = slices.Compact(mx.cols)
	mx.col = make([]int, len(raw))
	mx.val = make([]float64, len(raw))
	n := 0
	for _, r := range rows {
		for k := starts[r]; k < starts[r+1]; k++ {
			c, _ := slices.BinarySearch(mx.cols, raw[n])
			mx.col[n], mx.val[n] = c, d[k]
			n++
		}
	}
	return mx
}

// transpose returns mx's columns as rows: for column j, the shared rows
// and values, rows ascending.
func (mx matrix) transpose() (ptr []int, row []int, val []float64) {
	ptr = make([]int, len(mx.cols)+1)
	for _, c := range mx.col {
		ptr[c+1]++
	}
	for j := range mx.cols {
		ptr[j+1] += ptr[j]
	}
	next := slices.Clone(ptr[:len(mx.cols)])
	row = make([]int, len(mx.col))
	val = make([]float64, len(mx.col))
	for s := range len(mx.ptr) - 1 {
		for k := mx.ptr[s]; k < mx.ptr[s+1]; k++ {
			c := mx.col[k]
			row[next[c]], val[next[c]] = s, mx.val[k]
			next[c]++
		}
	}
	return ptr, row, val
}

// mulVec sets out (one element per shared row) to mx·x.
func (mx matrix) mulVec(out, x []float64) {
	for s := range len(mx.ptr) - 1 {
		var sum float64
		for k := mx.ptr[s]; k < mx.ptr[s+1]; k++ {
			sum += mx.val[k] * x[mx.col[k]]
		}
		out[s] = sum
	}
}

// mulTransVec sets out (one element per column of mx) to mxᵀ·z.
func (mx matrix) mulTransVec(out, z []float64) {
	clear(out)
	for s := range len(mx.ptr) - 1 {
		for k := mx.ptr[s]; k < mx.ptr[s+1]; k++ {
			out[mx.col[k]] += mx.val[k] * z[s]
		}
	}
}

// cancelEvery is how many multiply-adds of the product Compare does
// between two looks at its context.
const cancelEvery = 1 << 22

func comparePair(ctx context.Context, ta, tb *adapter.Tensor, a, b *adapter.Adapter, o Options) (Pair, error) {
	if !slices.Equal(ta.Shape, tb.Shape) || len(ta.Shape) == 0 {
		return Pair{}, fmt.Errorf("overlap: tensor %s has shape %v in %q but %v in %q", ta.Name, ta.Shape, a.Name, tb.Shape, b.Name)
	}
	for _, c := range []struct {
		t *adapter.Tensor
		a *adapter.Adapter
	}{{ta, a}, {tb, b}} {
		if err := c.t.Validate(); err != nil { // sorted, in range: what the sparse walk relies on
			return Pair{}, fmt.Errorf("overlap: adapter %q: %w", c.a.Name, err)
		}
	}
	m := ta.Shape[len(ta.Shape)-1]
	p := Pair{Tensor: ta.Name, NNZA: ta.NNZ(), NNZB: tb.NNZ(), M: m, AWOR: 1}
	// shared indices: merge of two sorted lists
	for i, j := 0, 0; i < len(ta.Indices) && j < len(tb.Indices); {
		switch {
		case ta.Indices[i] < tb.Indices[j]:
			i++
		case ta.Indices[i] > tb.Indices[j]:
			j++
		default:
			p.Shared++
			i++
			j++
		}
	}
	if u := p.NNZA + p.NNZB - p.Shared; u > 0 {
		p.Jaccard = float64(p.Shared) / float64(u)
	}
	da, err := deltas(ta, a, o)
	if err != nil {
		return Pair{}, err
	}
	db, err := deltas(tb, b, o)
	if err != nil {
		return Pair{}, err
	}
	if m == 0 { // no elements, so no entries: AᵀB is empty
		return p, nil
	}
	// Only rows touched by both adapters contribute to AᵀB, whose rows are
	// A's columns and whose columns are B's, both compressed to those
	// present in the shared rows.
	rowsA, startsA := rowRanges(ta.Indices, m)
	rowsB, startsB := rowRanges(tb.Indices, m)
	ia, ib := sharedRows(rowsA, rowsB)
	A, B := restrict(ta, da, m, startsA, ia), restrict(tb, db, m, startsB, ib)

	// ‖AᵀB‖₀ and ‖AᵀB‖_F, one row of AᵀB (a column j of A) at a time: the
	// row is accumulated over B's compressed columns, so memory stays
	// O(nnz) however many non-zeros the product has.
	colPtr, colRow, colVal := A.transpose()
	acc := make([]float64, len(B.cols))
	seen := make([]bool, len(B.cols))
	var touched []int
	var fro2 float64
	work := 0
	for j := range A.cols {
		for k := colPtr[j]; k < colPtr[j+1]; k++ {
			s, v := colRow[k], colVal[k]
			for l := B.ptr[s]; l < B.ptr[s+1]; l++ {
				c := B.col[l]
				if !seen[c] {
					seen[c] = true
					touched = append(touched, c)
				}
				acc[c] += v * B.val[l]
			}
			if work += B.ptr[s+1] - B.ptr[s]; work >= cancelEvery {
				work = 0
				if err := ctx.Err(); err != nil {
					return Pair{}, fmt.Errorf("overlap: %w", err)
				}
			}
		}
		for _, c := range touched {
			if v := acc[c]; v != 0 {
				p.ProductNNZ++
				fro2 += v * v
			}
			acc[c], seen[c] = 0, false
		}
		touched = touched[:0]
	}
	p.AWOMFro = math.Sqrt(fro2)
	p.AWOR = 1 - float64(p.ProductNNZ)/(float64(m)*float64(m))
	if p.ProductNNZ > 0 {
		p.AWOM = spectralNorm(A, B, o.PowerIterations)
	}
	return p, nil
}

// spectralNorm estimates the largest singular value of P = AᵀB by power
// iteration on PᵀP = BᵀA·AᵀB (deterministic start vector), applying the
// factors one at a time: each step costs O(nnz(A) + nnz(B)), and P is
// never formed.
func spectralNorm(A, B matrix, iters int) float64 {
	x := make([]float64, len(B.cols))
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range x {
		x[i] = rng.Float64() + 0.5
	}
	z := make([]float64, len(A.ptr)-1) // one per shared row
	y := make([]float64, len(A.cols))
	sigma := 0.0
	for it := 0; it < iters; it++ {
		normalize(x)
		B.mulVec(z, x)          // z = B x
		A.mulTransVec(y, z)     // y = Aᵀ z = P x
		A.mulVec(z, y)          // z = A y
		B.mulTransVec(x, z)     // x = Bᵀ z = Pᵀ P x
		s := math.Sqrt(norm(x)) // ‖PᵀP x‖ → σ²
		if it > 5 && math.Abs(s-sigma) <= 1e-12*max(s, 1e-300) {
			sigma = s
			break
		}
		sigma = s
	}
	return sigma
}

func norm(x []float64) float64 {
	var s float64
	for _, v := range x {
		s += v * v
	}
	return math.Sqrt(s)
}

func normalize(x []float64) {
	n := norm(x)
	if n == 0 {
		return
	}
	for i := range x {
		x[i] /= n
	}
}

// BaseFromWeights returns an Options.Base reading exposed weights (as
// export.ReadWeights returns them) of the given dtypes and shapes.
func BaseFromWeights(weights map[string][]byte, dtype func(name string) (tensor.DType, []int64, bool)) func(string) ([]float32, error) {
	return func(name string) ([]float32, error) {
		dt, shape, ok := dtype(name)
		b, ok2 := weights[name]
		if !ok || !ok2 {
			return nil, fmt.Errorf("overlap: the base model has no exposed weight %q", name)
		}
		t, err := tensor.New(dt, shape, b)
		if err != nil {
			return nil, err
		}
		return t.AsFloat32()
	}
}
