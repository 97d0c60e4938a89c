package lorabranch

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/shira-ort/shira-ort/internal/closest"
	"github.com/shira-ort/shira-ort/internal/dense"
	"github.com/shira-ort/shira-ort/internal/ortadapter"
	"github.com/shira-ort/shira-ort/peft"
	"github.com/shira-ort/shira-ort/tensor"
)

// ErrNonFinite is peft.ErrNonFinite: FromPeft, Random and Merge wrap it when
// a value they would write is NaN or infinite.
var ErrNonFinite = peft.ErrNonFinite

// Params are the values of one branch: the stored weight W [K, N] of the
// model becomes W + A·B. Any scale is already folded into B.
type Params struct {
	Branch
	// A is [K, Rank] and B is [Rank, N], row-major.
	A, B []float32
}

// check validates the shapes of p.
func (p *Params) check() error {
	if p.Weight == "" || p.K <= 0 || p.N <= 0 || p.Rank <= 0 {
		return fmt.Errorf("lorabranch: params %s: K=%d N=%d rank=%d", closest.Quote(p.Weight), p.K, p.N, p.Rank)
	}
	if int64(len(p.A)) != int64(p.K)*int64(p.Rank) || int64(len(p.B)) != int64(p.Rank)*int64(p.N) {
		return fmt.Errorf("lorabranch: params %s: A has %d values and B %d, want %d·%d and %d·%d",
			closest.Quote(p.Weight), len(p.A), len(p.B), p.K, p.Rank, p.Rank, p.N)
	}
	return nil
}

// Delta returns A·B, the change of the stored weight, row-major [K, N]:
// each entry summed in float64 and rounded once to float32.
func (p *Params) Delta() ([]float32, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	d := make([]float32, p.K*p.N)
	row := make([]float64, p.N)
	for k := range p.K {
		clear(row)
		for j := range p.Rank {
			a := float64(p.A[k*p.Rank+j])
			for n, b := range p.B[j*p.N : (j+1)*p.N] {
				row[n] += a * float64(b)
			}
		}
		for n, v := range row {
			d[k*p.N+n] = float32(v)
		}
	}
	return d, nil
}

// Merge adds A·B (Delta) of every params into the float32 weight of its
// name in weights (raw little-endian bytes, as export.Model.ReadWeights
// returns them), in place: the offline-fused model a Run with these
// params active reproduces up to float32 rounding. Nothing changes unless
// every sum is computed and finite (an error wraps ErrNonFinite otherwise).
func Merge(weights map[string][]byte, params []Params) error {
	sums := make([][]byte, len(params))
	for i := range params {
		p := &params[i]
		w, ok := weights[p.Weight]
		if !ok {
			return fmt.Errorf("lorabranch: no weight %s to merge into", closest.Quote(p.Weight))
		}
		d, err := p.Delta()
		if err != nil {
			return err
		}
		sum := append([]byte(nil), w...)
		if err := dense.Add(sum, tensor.Float32, d); err != nil {
			return fmt.Errorf("lorabranch: merge into %s: %w", closest.Quote(p.Weight), err)
		}
		if k := dense.NewNonFinite(sum, w, tensor.Float32); k >= 0 {
			return fmt.Errorf("%w: merging A·B into %s makes flat index %d non-finite", ErrNonFinite, closest.Quote(p.Weight), k)
		}
		sums[i] = sum
	}
	for i := range params {
		copy(weights[params[i].Weight], sums[i])
	}
	return nil
}

// Targets returns the Target of every params, in order: what AddBranches
// needs for a model these params fit.
func Targets(params []Params) []Target {
	out := make([]Target, len(params))
	for i := range params {
		out[i] = params[i].Target
	}
	return out
}

// Encode returns the .onnx_adapter file (internal/ortadapter) holding the
// A and B of every params under the branch input names (ParamNames), as
// float32 [K, Rank] and [Rank, N]. A weight may appear once.
func Encode(params []Params) ([]byte, error) {
	a, err := adapterOf(params)
	if err != nil {
		return nil, err
	}
	b, err := ortadapter.Encode(a)
	if err != nil {
		return nil, fmt.Errorf("lorabranch: %w", err)
	}
	return b, nil
}

// WriteAdapter writes Encode(params) to path atomically (a temporary file
// and a rename, internal/atomicfile): the file ort.LoadLoraAdapter loads.
func WriteAdapter(path string, params []Params) error {
	a, err := adapterOf(params)
	if err != nil {
		return err
	}
	if err := ortadapter.Write(path, a); err != nil {
		return fmt.Errorf("lorabranch: %w", err)
	}
	return nil
}

func adapterOf(params []Params) (*ortadapter.Adapter, error) {
	if len(params) == 0 {
		return nil, fmt.Errorf("lorabranch: adapter with no params")
	}
	a := &ortadapter.Adapter{}
	seen := map[string]bool{}
	for i := range params {
		p := &params[i]
		if err := p.check(); err != nil {
			return nil, err
		}
		if seen[p.Weight] {
			return nil, fmt.Errorf("lorabranch: params for %s given twice", closest.Quote(p.Weight))
		}
		seen[p.Weight] = true
		an, bn := ParamNames(p.Weight)
		a.Parameters = append(a.Parameters,
			ortadapter.Parameter{Name: an, DType: tensor.Float32, Dims: []int64{int64(p.K), int64(p.Rank)}, Data: tensor.Bytes(p.A)},
			ortadapter.Parameter{Name: bn, DType: tensor.Float32, Dims: []int64{int64(p.Rank), int64(p.N)}, Data: tensor.Bytes(p.B)})
	}
	return a, nil
}

// Random returns synthetic params for branches (each with its own Rank: the
// Branches of a model AddBranches made, say with ForDensity's ranks): A entries
// drawn from N(0, 1) and B entries from N(0, scale²/Rank), so that the
// entries of the change A·B have standard deviation scale, the meaning
// internal/synth gives its Scale for SHiRA deltas. The same seed gives the
// same params. scale must be finite and not negative.
func Random(branches []Branch, seed uint64, scale float64) ([]Params, error) {
	if !(scale >= 0) || math.IsInf(scale, 0) {
		return nil, fmt.Errorf("lorabranch: scale %g is not a finite non-negative number", scale)
	}
	rng := rand.New(rand.NewPCG(seed, 0x10ab4a))
	out := make([]Params, len(branches))
	for i, b := range branches {
		p := Params{Branch: b}
		if p.Weight == "" || p.K <= 0 || p.N <= 0 || p.Rank <= 0 {
			return nil, fmt.Errorf("lorabranch: branch %s: K=%d N=%d rank=%d", closest.Quote(b.Weight), b.K, b.N, b.Rank)
		}
		sb := scale / math.Sqrt(float64(b.Rank))
		p.A = make([]float32, b.K*b.Rank)
		for j := range p.A {
			p.A[j] = float32(rng.NormFloat64())
		}
		p.B = make([]float32, b.Rank*b.N)
		for j := range p.B {
			v := float32(rng.NormFloat64() * sb)
			if math.IsInf(float64(v), 0) {
				return nil, fmt.Errorf("%w: scale %g overflows float32 in B of %s", ErrNonFinite, scale, closest.Quote(b.Weight))
			}
			p.B[j] = v
		}
		out[i] = p
	}
	return out, nil
}
