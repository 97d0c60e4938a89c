package peft

import (
	"fmt"
	"math/big"
	"sort"
	"strconv"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/dense"
	"github.com/shira-ort/shira-ort/tensor"
)

// ConvertOptions tune ConvertShira.
type ConvertOptions struct {
	// Name is the adapter name.
	Name string
	// Alpha is the default alpha stored in the adapter: PEFT's runtime
	// scaling (not saved in checkpoints; 0 means 1).
	Alpha float32
	// ValueDType is the dtype of the stored deltas; Undefined means the
	// weight's dtype (fp16/bf16 values rounded to nearest even).
	ValueDType tensor.DType
}

// ModuleReport tells where one module went.
type ModuleReport struct {
	Module string `json:"module"`
	Tensor string `json:"tensor"`
	Layout string `json:"layout"`
	NNZ    int    `json:"nnz"`
	// Density is NNZ over the weight's element count.
	Density float64 `json:"density"`
}

// ConvertShira turns a SHiRA checkpoint into a delta-semantics adapter for
// the exported model m: each module is resolved to its exposed tensor and
// its (row, column) indices become flat indices of that tensor. A module
// without a match, an index out of range, a duplicate index, an nnz other
// than r*(in+out), a non-finite value or one that overflows the stored
// value dtype once rounded (ErrNonFinite) is an error naming the module.
func ConvertShira(c *Checkpoint, model *export.Model, o ConvertOptions) (*adapter.Adapter, []ModuleReport, error) {
	m := model.Manifest()
	mods, err := c.Shira()
	if err != nil {
		return nil, nil, err
	}
	alpha := o.Alpha
	if alpha == 0 {
		alpha = 1
	}
	a := &adapter.Adapter{Name: o.Name, DefaultAlpha: alpha, Semantics: adapter.Delta, ModelFingerprint: m.Fingerprint,
		Metadata: map[string]string{"created_by": "shira-ort convert --peft", "peft_type": "SHIRA",
			"r": strconv.Itoa(c.Config.R), "mask_type": c.Config.MaskType}}
	if c.Config.BaseModel != "" {
		a.Metadata["base_model"] = c.Config.BaseModel
	}
	mp := NewMapper(model)
	used := map[string]string{}
	var reports []ModuleReport
	for i := range mods {
		mod := &mods[i]
		t, err := mp.Resolve(mod.Module)
		if err != nil {
			return nil, nil, err
		}
		if prev, dup := used[t.Entry.Name]; dup {
			return nil, nil, fmt.Errorf("%w: modules %s and %s both map to %s", ErrCheckpoint, prev, mod.Module, t.Entry.Name)
		}
		used[t.Entry.Name] = mod.Module
		if err := checkBudget(mod, c.Config.R, &t); err != nil {
			return nil, nil, err
		}
		idx, err := flatIndices(mod, &t, c.Config.FanInFanOut)
		if err != nil {
			return nil, nil, err
		}
		vd := o.ValueDType
		if vd == tensor.Undefined {
			vd = t.Entry.DType
			if !vd.IsFloat() { // a quantized weight's codes: the values stay floats
				vd = tensor.Float32
			}
		}
		if k := dense.NonFinite(mod.Values, vd); k >= 0 {
			return nil, nil, fmt.Errorf("%w: module %s: value %d = %g at (%d, %d) is beyond the range of %v, the dtype the values are stored in",
				ErrNonFinite, mod.Module, k, mod.Values[k], mod.Dim0[k], mod.Dim1[k], vd)
		}
		at, err := adapter.NewTensor(t.Entry.Name, t.Entry.DType, t.Entry.LogicalShape(), idx, mod.Values, vd)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: module %s: %w", ErrCheckpoint, mod.Module, err)
		}
		setBase(&at, t.Entry)
		a.Tensors = append(a.Tensors, at)
		reports = append(reports, ModuleReport{Module: mod.Module, Tensor: t.Entry.Name, Layout: t.Layout.String(),
			NNZ: mod.NNZ(), Density: float64(mod.NNZ()) / float64(t.In*t.Out)})
	}
	if err := a.Sort(); err != nil {
		return nil, nil, err
	}
	sort.Slice(reports, func(i, j int) bool { return reports[i].Module < reports[j].Module })
	return a, reports, a.Validate()
}

// checkBudget checks that mod has SHiRA's r*(in+out) entries (r <= 0:
// unchecked); the product is compared and printed without overflow.
func checkBudget(mod *ShiraModule, r int, t *Target) error {
	if r <= 0 {
		return nil
	}
	want := new(big.Int).Mul(big.NewInt(int64(r)), big.NewInt(int64(t.In)+int64(t.Out)))
	if want.Cmp(big.NewInt(int64(mod.NNZ()))) != 0 {
		return fmt.Errorf("%w: module %s: %d values but r=%d and weight %dx%d give r*(in+out) = %v",
			ErrCheckpoint, mod.Module, mod.NNZ(), r, t.Out, t.In, want)
	}
	return nil
}

// flatIndices converts a module's (dim0, dim1) pairs to flat indices of
// the exposed tensor, checking bounds.
func flatIndices(mod *ShiraModule, t *Target, fanInFanOut bool) ([]uint32, error) {
	d0, d1 := int64(t.Out), int64(t.In) // the module's stored weight shape
	if fanInFanOut {
		d0, d1 = d1, d0
	}
	idx := make([]uint32, len(mod.Values))
	for k := range idx {
		r, c := mod.Dim0[k], mod.Dim1[k]
		if r >= d0 || c >= d1 {
			return nil, fmt.Errorf("%w: module %s: index %d = (%d, %d) out of range for its weight [%d, %d] (exposed as %s %v)",
				ErrCheckpoint, mod.Module, k, r, c, d0, d1, t.Entry.Name, t.Entry.Shape)
		}
		o, i := r, c
		if fanInFanOut {
			o, i = c, r
		}
		idx[k] = uint32(t.Flat(o, i))
	}
	return idx, nil
}

func setBase(at *adapter.Tensor, e *export.TensorEntry) {
	at.BaseSHA256, _ = e.Sum()
}
