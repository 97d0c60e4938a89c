// Package synth makes SHiRA adapters with random values over a chosen mask,
// for tests, benchmarks and the demo: `shira-ort create`. Real adapters come
// from training (PEFT) and are converted instead.
package synth

import (
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/mask"
	"github.com/shira-ort/shira-ort/tensor"
)

// Mask names a way of choosing the touched entries of a weight.
type Mask string

// The masks from the SHiRA paper that synth can build without training data.
const (
	MaskRandom          Mask = "rand" // uniformly random entries
	MaskWeightMagnitude Mask = "wm"   // the largest |w| entries
	// MaskStruct is SHiRA-Struct: every stride-th row and column of the
	// [rows, cols] weight plus its diagonal, the stride chosen as the
	// smallest whose mask has at most the budgeted entries; when even the
	// sparsest (first row, first column, diagonal) exceeds the budget, that
	// one is used.
	MaskStruct Mask = "struct"
)

// Options describe a synthetic adapter.
type Options struct {
	Name    string
	Mask    Mask
	Density float64 // fraction of each weight's entries touched, (0, 1]
	// R, when > 0, replaces Density with PEFT's budget: r*(rows+cols)
	// entries per rank-2 weight (capped at the element count).
	R         int
	Scale     float64           // standard deviation of the random deltas
	Seed      uint64            // the same seed gives the same adapter
	Semantics adapter.Semantics // Delta stores δ; Overwrite stores base+δ
	Targets   *regexp.Regexp    // nil: every exposed weight
	Alpha     float32           // default alpha stored in the file (0 means 1)
	Metadata  map[string]string // copied into the adapter
}

// Validate checks o: a known mask, a finite scale, density and alpha, r
// not negative and, when r is 0, a density in (0, 1]. New calls it first.
func (o Options) Validate() error {
	for _, f := range []struct {
		name string
		v    float64
	}{{"scale", o.Scale}, {"density", o.Density}, {"alpha", float64(o.Alpha)}} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			return fmt.Errorf("synth: %s %v is not finite", f.name, f.v)
		}
	}
	if o.R < 0 {
		return fmt.Errorf("synth: r %d is negative", o.R)
	}
	if o.R == 0 && !(o.Density > 0 && o.Density <= 1) {
		return fmt.Errorf("synth: density %g is not in (0, 1]", o.Density)
	}
	if o.Mask != MaskRandom && o.Mask != MaskWeightMagnitude && o.Mask != MaskStruct {
		return fmt.Errorf("synth: unknown mask %q (want rand, wm or struct)", o.Mask)
	}
	return nil
}

// New builds an adapter for the exposed weights of an exported model.
// weights holds each exposed weight's bytes by name (export.ReadWeights).
// Options are checked first ([Options.Validate]); a scale so large that a
// value is not finite in the weight's dtype is an error too.
func New(m *export.Manifest, weights map[string][]byte, o Options) (*adapter.Adapter, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	alpha := o.Alpha
	if alpha == 0 {
		alpha = 1
	}
	a := &adapter.Adapter{Name: o.Name, DefaultAlpha: alpha, Semantics: o.Semantics,
		ModelFingerprint: m.Fingerprint, Metadata: map[string]string{
			"created_by": "shira-ort create", "mask": string(o.Mask),
			"scale": fmt.Sprint(o.Scale), "seed": fmt.Sprint(o.Seed)}}
	if o.R > 0 { // the budget that chose the entries: r or density, not both
		a.Metadata["r"] = fmt.Sprint(o.R)
	} else {
		a.Metadata["density"] = fmt.Sprint(o.Density)
	}
	for k, v := range o.Metadata {
		a.Metadata[k] = v
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x5ee1ad))
	for _, e := range m.Tensors {
		if o.Targets != nil && !o.Targets.MatchString(e.Name) && !o.Targets.MatchString(e.Source.Name) {
			continue
		}
		data, ok := weights[e.Name]
		if !ok {
			return nil, fmt.Errorf("synth: no data for exposed weight %q", e.Name)
		}
		base, err := baseOf(e, data)
		if err != nil {
			return nil, fmt.Errorf("synth: weight %q: %w", e.Name, err)
		}
		t, err := newTensor(base, e, o, rng)
		if err != nil {
			return nil, err
		}
		a.Tensors = append(a.Tensors, t)
	}
	if len(a.Tensors) == 0 {
		return nil, fmt.Errorf("synth: no exposed weight matches the targets")
	}
	return a, a.Validate()
}

// baseOf returns the weight as a tensor to choose entries and values
// from: its own bytes, or for a quantized weight its dequantized values in
// the shape adapters index (export.TensorEntry.LogicalShape).
func baseOf(e export.TensorEntry, data []byte) (*tensor.Tensor, error) {
	s, err := e.Scheme()
	if err != nil {
		return nil, err
	}
	if s == nil {
		return tensor.New(e.DType, e.Shape, data)
	}
	f := make([]float32, s.NumElements())
	for i := range f {
		f[i] = s.Dequantize(i, s.Code(data, i))
	}
	return tensor.FromFloat32(e.LogicalShape(), f)
}

func newTensor(base *tensor.Tensor, e export.TensorEntry, o Options, rng *rand.Rand) (adapter.Tensor, error) {
	numel := base.NumElements()
	shape := e.LogicalShape()
	// values are stored in the weight's dtype, or as float32 for a
	// quantized weight (its codes are re-quantized when it is patched)
	vdt := e.DType
	if e.Quant != nil {
		vdt = tensor.Float32
	}
	k, err := budget(shape, numel, o)
	if err != nil {
		return adapter.Tensor{}, fmt.Errorf("synth: weight %q: %w", e.Name, err)
	}
	var idx []uint32
	switch o.Mask {
	case MaskRandom:
		idx, err = mask.Random(numel, k, rng)
	case MaskWeightMagnitude:
		idx, err = mask.WeightMagnitude(base, k)
	case MaskStruct:
		idx, err = structMask(shape, k)
	}
	if err != nil {
		return adapter.Tensor{}, fmt.Errorf("synth: weight %q: %w", e.Name, err)
	}
	baseF32, err := base.AsFloat32()
	if err != nil {
		return adapter.Tensor{}, err
	}
	vals := make([]float32, len(idx))
	for i, j := range idx {
		v := float32(rng.NormFloat64() * o.Scale)
		if o.Semantics == adapter.Overwrite {
			v = baseF32[j] + v
		}
		vals[i] = v
	}
	t := adapter.Tensor{Name: e.Name, DType: e.DType, ValueDType: vdt,
		Shape: append([]int64(nil), shape...), Indices: idx, Values: encode(vals, vdt)}
	stored, err := t.ValuesFloat32() // as rounded to the dtype
	if err != nil {
		return adapter.Tensor{}, err
	}
	for i, v := range stored {
		if f := float64(v); math.IsNaN(f) || math.IsInf(f, 0) {
			return adapter.Tensor{}, fmt.Errorf("synth: weight %q: scale %g gives a value (%g) beyond the range of %v; use a smaller scale",
				e.Name, o.Scale, vals[i], vdt)
		}
	}
	t.BaseSHA256, _ = e.Sum()
	return t, nil
}

// encode rounds float32 values to dtype (round to nearest even) as raw bytes.
func encode(v []float32, dtype tensor.DType) []byte {
	switch dtype {
	case tensor.Float16:
		out := make([]uint16, len(v))
		tensor.Float32sToFloat16(out, v)
		return tensor.Bytes(out)
	case tensor.BFloat16:
		out := make([]uint16, len(v))
		for i, f := range v {
			out[i] = tensor.Float32ToBFloat16(f)
		}
		return tensor.Bytes(out)
	default:
		return tensor.Bytes(v)
	}
}

// budget returns the number of entries to touch in a weight of shape.
func budget(shape []int64, numel int, o Options) (int, error) {
	if o.R == 0 {
		return mask.Count(numel, o.Density), nil
	}
	if len(shape) != 2 {
		return 0, fmt.Errorf("--r needs a rank-2 weight, got shape %v", shape)
	}
	return min(numel, o.R*int(shape[0]+shape[1])), nil
}

// structMask returns the SHiRA-Struct mask of a rank-2 shape with the
// smallest stride whose size is at most k (stride = rows+cols at worst:
// first row, first column and the diagonal).
func structMask(shape []int64, k int) ([]uint32, error) {
	if len(shape) != 2 {
		return nil, fmt.Errorf("the struct mask needs a rank-2 weight, got shape %v", shape)
	}
	rows, cols := int(shape[0]), int(shape[1])
	limit := max(rows, cols, 1)
	// struct size falls as the stride grows: binary search the smallest fit.
	lo, hi := 1, limit
	for lo < hi {
		mid := (lo + hi) / 2
		if structSize(rows, cols, mid) <= k {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return mask.Struct(rows, cols, lo)
}

// structSize counts the entries of mask.Struct(rows, cols, stride).
func structSize(rows, cols, stride int) int {
	fr := (rows + stride - 1) / stride // full rows
	fc := (cols + stride - 1) / stride // full columns
	n := fr*cols + fc*(rows-fr)
	for i := 0; i < min(rows, cols); i++ { // diagonal entries not already in
		if i%stride != 0 {
			n++
		}
	}
	return n
}
