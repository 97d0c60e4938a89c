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
// contribute, so the cost is Σ_rows nnz₁(row)·nnz₂(row), never m².
package overlap

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"

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
func Compare(adapters []*adapter.Adapter, o Options) (perTensor, overall []Pair, err error) {
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
				p, err := comparePair(ta, tb, a, b, o)
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

type entry struct {
	col uint32
	v   float64
}

// rowsOf groups a tensor's entries by row of its [rows, m] matrix view
// (indices are sorted, so each row's entries are contiguous).
func rowsOf(t *adapter.Tensor, d []float64, m int64) map[int64][]entry {
	out := map[int64][]entry{}
	for k, ix := range t.Indices {
		r := int64(ix) / m
		out[r] = append(out[r], entry{uint32(int64(ix) % m), d[k]})
	}
	return out
}

func comparePair(ta, tb *adapter.Tensor, a, b *adapter.Adapter, o Options) (Pair, error) {
	if !slices.Equal(ta.Shape, tb.Shape) || len(ta.Shape) == 0 {
		return Pair{}, fmt.Errorf("overlap: tensor %s has shape %v in %q but %v in %q", ta.Name, ta.Shape, a.Name, tb.Shape, b.Name)
	}
	m := ta.Shape[len(ta.Shape)-1]
	p := Pair{Tensor: ta.Name, NNZA: ta.NNZ(), NNZB: tb.NNZ(), M: m}
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
	ra, rb := rowsOf(ta, da, m), rowsOf(tb, db, m)
	prod := map[uint64]float64{} // (j, k) -> Σ_r A[r,j]·B[r,k]
	for r, ea := range ra {
		eb, ok := rb[r]
		if !ok {
			continue
		}
		for _, x := range ea {
			for _, y := range eb {
				prod[uint64(x.col)<<32|uint64(y.col)] += x.v * y.v
			}
		}
	}
	var fro2 float64
	coo := make([]cooEntry, 0, len(prod))
	for key, v := range prod {
		if v != 0 {
			p.ProductNNZ++
			fro2 += v * v
			coo = append(coo, cooEntry{uint32(key >> 32), uint32(key), v})
		}
	}
	p.AWOMFro = math.Sqrt(fro2)
	p.AWOR = 1 - float64(p.ProductNNZ)/(float64(m)*float64(m))
	p.AWOM = spectralNorm(coo, int(m), o.PowerIterations)
	return p, nil
}

type cooEntry struct {
	r, c uint32
	v    float64
}

// spectralNorm estimates the largest singular value of the m×m sparse
// matrix P by power iteration on PᵀP (deterministic start vector).
func spectralNorm(p []cooEntry, m, iters int) float64 {
	if len(p) == 0 {
		return 0
	}
	sort.Slice(p, func(i, j int) bool { // deterministic summation order
		if p[i].r != p[j].r {
			return p[i].r < p[j].r
		}
		return p[i].c < p[j].c
	})
	x := make([]float64, m)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range x {
		x[i] = rng.Float64() + 0.5
	}
	y := make([]float64, m)
	sigma := 0.0
	for it := 0; it < iters; it++ {
		normalize(x)
		clear(y)
		for _, e := range p { // y = P x
			y[e.r] += e.v * x[e.c]
		}
		clear(x)
		for _, e := range p { // x = Pᵀ y
			x[e.c] += e.v * y[e.r]
		}
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
