// Package extract builds a SHiRA adapter from a full fine-tune: for every
// exposed weight of the base model it keeps the top-k entries of
// |tuned − base| and reports the fraction of ‖ΔW‖² ("energy") they hold.
package extract

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/mask"
	"github.com/shira-ort/shira-ort/tensor"
)

// Options tune FromModels.
type Options struct {
	// Name of the adapter.
	Name string
	// Density is the fraction of each tensor's entries kept, (0, 1].
	Density float64
	// Semantics: Overwrite (default) stores the tuned values, so kept
	// entries are reproduced bit for bit; Delta stores tuned − base.
	Semantics adapter.Semantics
}

// TensorReport describes one tensor of the extraction.
type TensorReport struct {
	Tensor string `json:"tensor"`
	// Changed counts entries where tuned != base; NNZ the entries kept.
	Changed int `json:"changed"`
	NNZ     int `json:"nnz"`
	// Energy is the kept fraction of ‖ΔW‖_F² (1 when nothing changed).
	Energy float64 `json:"energy"`
	// DeltaNorm is ‖ΔW‖_F.
	DeltaNorm float64 `json:"delta_norm"`
}

// Report describes an extraction; Energy is over all tensors.
type Report struct {
	Tensors []TensorReport `json:"tensors"`
	Energy  float64        `json:"energy"`
	NNZ     int            `json:"nnz"`
	Changed int            `json:"changed"`
}

// FromModels extracts an adapter for the exported base model from the
// exported tuned one. Each exposed weight of tuned is matched to base's by
// exposed name, then by source name, then by consuming node name; shapes
// and dtypes must agree. Unchanged tensors are left out of the adapter.
func FromModels(ctx context.Context, baseModel, tunedModel *export.Model, o Options) (*adapter.Adapter, *Report, error) {
	if !(o.Density > 0 && o.Density <= 1) {
		return nil, nil, fmt.Errorf("extract: density %g is not in (0, 1]", o.Density)
	}
	baseW, err := baseModel.ReadWeights(ctx)
	if err != nil {
		return nil, nil, err
	}
	tunedW, err := tunedModel.ReadWeights(ctx)
	if err != nil {
		return nil, nil, err
	}
	base, tunedM := baseModel.Manifest(), tunedModel.Manifest()
	a := &adapter.Adapter{Name: o.Name, DefaultAlpha: 1, Semantics: o.Semantics, ModelFingerprint: base.Fingerprint,
		Metadata: map[string]string{"created_by": "shira-ort extract", "density": fmt.Sprint(o.Density)}}
	rep := &Report{}
	var totalE, keptE float64
	for i := range base.Tensors {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		e := &base.Tensors[i]
		te, err := match(e, tunedM)
		if err != nil {
			return nil, nil, err
		}
		if te.DType != e.DType || !slices.Equal(te.Shape, e.Shape) {
			return nil, nil, fmt.Errorf("extract: %s is %v %v in base but %s is %v %v in tuned", e.Name, e.DType, e.Shape, te.Name, te.DType, te.Shape)
		}
		b, err := floats(e, baseW[e.Name])
		if err != nil {
			return nil, nil, err
		}
		t, err := floats(te, tunedW[te.Name])
		if err != nil {
			return nil, nil, err
		}
		d := make([]float32, len(b))
		tr := TensorReport{Tensor: e.Name}
		var tot float64
		for j := range b {
			d[j] = t[j] - b[j]
			if math.IsNaN(float64(d[j])) || math.IsInf(float64(d[j]), 0) {
				return nil, nil, fmt.Errorf("extract: %s: entry %d: tuned %v - base %v is not finite", e.Name, j, t[j], b[j])
			}
			if t[j] != b[j] {
				tr.Changed++
			}
			tot += float64(d[j]) * float64(d[j])
		}
		tr.DeltaNorm = math.Sqrt(tot)
		tr.Energy = 1
		if tr.Changed > 0 {
			dt, _ := tensor.FromFloat32(e.Shape, d)
			idx, err := mask.WeightMagnitude(dt, mask.Count(len(d), o.Density))
			if err != nil {
				return nil, nil, fmt.Errorf("extract: %s: %w", e.Name, err)
			}
			var kept float64
			keep := idx[:0]
			var vals []float32
			for _, j := range idx {
				if t[j] == b[j] {
					continue
				}
				kept += float64(d[j]) * float64(d[j])
				keep = append(keep, j)
				if o.Semantics == adapter.Overwrite {
					vals = append(vals, t[j])
				} else {
					vals = append(vals, d[j])
				}
			}
			at, err := adapter.NewTensor(e.Name, e.DType, e.Shape, keep, vals, e.DType)
			if err != nil {
				return nil, nil, err
			}
			at.BaseSHA256, _ = e.Sum()
			a.Tensors = append(a.Tensors, at)
			tr.NNZ = len(keep)
			if tot > 0 {
				tr.Energy = kept / tot
			}
			keptE += kept
			totalE += tot
		}
		rep.Tensors = append(rep.Tensors, tr)
		rep.NNZ += tr.NNZ
		rep.Changed += tr.Changed
	}
	rep.Energy = 1
	if totalE > 0 {
		rep.Energy = keptE / totalE
	}
	if len(a.Tensors) == 0 {
		return nil, rep, fmt.Errorf("extract: the tuned model's exposed weights equal the base model's")
	}
	if err := a.Sort(); err != nil {
		return nil, nil, err
	}
	if err := a.Validate(); err != nil {
		return nil, nil, err
	}
	return a, rep, nil
}

func match(e *export.TensorEntry, tm *export.Manifest) (*export.TensorEntry, error) {
	if te := tm.Entry(e.Name); te != nil {
		return te, nil
	}
	var found *export.TensorEntry
	for i := range tm.Tensors {
		te := &tm.Tensors[i]
		if te.Source.Name == e.Source.Name || sameConsumer(te, e) {
			if found != nil && found != te {
				return nil, fmt.Errorf("extract: base tensor %s matches tuned tensors %s and %s", e.Name, found.Name, te.Name)
			}
			found = te
		}
	}
	if found == nil {
		return nil, fmt.Errorf("extract: no tuned tensor for base tensor %s (by name, source name or consuming node)", e.Name)
	}
	return found, nil
}

func sameConsumer(a, b *export.TensorEntry) bool {
	for _, x := range a.Consumers {
		for _, y := range b.Consumers {
			if x.Node != "" && x.Node == y.Node && x.InputIndex == y.InputIndex {
				return true
			}
		}
	}
	return false
}

func floats(e *export.TensorEntry, b []byte) ([]float32, error) {
	t, err := tensor.New(e.DType, e.Shape, b)
	if err != nil {
		return nil, fmt.Errorf("extract: %s: %w", e.Name, err)
	}
	return t.AsFloat32()
}
