package lora

import (
	"context"
	"fmt"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/dense"
	"github.com/shira-ort/shira-ort/internal/mask"
	"github.com/shira-ort/shira-ort/tensor"
)

// ShiraOptions tune ToShira.
type ShiraOptions struct {
	// Name of the adapter.
	Name string
	// Density is the fraction of each tensor's entries kept, (0, 1].
	Density float64
	// ValueDType of the stored deltas; Undefined means the weight dtype.
	ValueDType tensor.DType
	// Fingerprint is the model fingerprint stored in the adapter.
	Fingerprint string
}

// ToShira builds a delta-semantics SHiRA adapter holding, per resolved
// module, the mask.Count(numel, Density) entries of scale·B·A with the
// largest magnitude, and reports the relative error each leaves. A
// product or a kept value that is NaN or infinite once rounded to the
// value dtype is an error wrapping ErrNonFinite, naming the module.
func ToShira(ctx context.Context, e *Engine, mods []Resolved, o ShiraOptions) (*adapter.Adapter, []TopKReport, error) {
	if !(o.Density > 0 && o.Density <= 1) {
		return nil, nil, fmt.Errorf("lora: density %g is not in (0, 1]", o.Density)
	}
	a := &adapter.Adapter{Name: o.Name, DefaultAlpha: 1, Semantics: adapter.Delta, ModelFingerprint: o.Fingerprint,
		Metadata: map[string]string{"created_by": "shira-ort convert --lora", "density": fmt.Sprint(o.Density)}}
	var reps []TopKReport
	for i := range mods {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		r := &mods[i]
		d, err := e.Delta(ctx, &r.Module, r.Target.Layout)
		if err != nil {
			return nil, nil, err
		}
		at, rep, err := topK(d, r, o)
		if err != nil {
			return nil, nil, err
		}
		a.Tensors = append(a.Tensors, at)
		reps = append(reps, rep)
	}
	if err := a.Sort(); err != nil {
		return nil, nil, err
	}
	sortReports(reps)
	if err := a.Validate(); err != nil {
		return nil, nil, err
	}
	return a, reps, nil
}

// topK builds the adapter tensor of r from its product d.
func topK(d []float32, r *Resolved, o ShiraOptions) (adapter.Tensor, TopKReport, error) {
	entry := r.Target.Entry
	dt, err := tensor.FromFloat32(entry.Shape, d)
	if err != nil {
		return adapter.Tensor{}, TopKReport{}, fmt.Errorf("lora: %s: %w", entry.Name, err)
	}
	idx, err := mask.WeightMagnitude(dt, mask.Count(len(d), o.Density))
	if err != nil {
		return adapter.Tensor{}, TopKReport{}, fmt.Errorf("lora: %s: %w", entry.Name, err)
	}
	var total, kept float64
	for _, v := range d {
		total += float64(v) * float64(v)
	}
	vals := make([]float32, 0, len(idx))
	keep := idx[:0]
	for _, j := range idx {
		if v := d[j]; v != 0 { // zeros add nothing
			kept += float64(v) * float64(v)
			vals = append(vals, v)
			keep = append(keep, j)
		}
	}
	vd := o.ValueDType
	if vd == tensor.Undefined {
		vd = entry.DType
		if !vd.IsFloat() { // a quantized weight's codes: the values stay floats
			vd = tensor.Float32
		}
	}
	if k := dense.NonFinite(vals, vd); k >= 0 {
		return adapter.Tensor{}, TopKReport{}, fmt.Errorf("%w: module %s: value %g at flat index %d of %s is beyond the range of %v, the dtype the values are stored in",
			ErrNonFinite, r.Module.Module, vals[k], keep[k], entry.Name, vd)
	}
	at, err := adapter.NewTensor(entry.Name, entry.DType, entry.Shape, keep, vals, vd)
	if err != nil {
		return adapter.Tensor{}, TopKReport{}, err
	}
	at.BaseSHA256, _ = entry.Sum()
	re, en := relError(kept, total)
	return at, TopKReport{Module: r.Module.Module, Tensor: entry.Name, NNZ: len(keep), RelError: re, Energy: en}, nil
}
