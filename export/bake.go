package export

import (
	"context"
	"fmt"
	"slices"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/patch"
)

// Bake fuses cfgs offline (Fuse, with opts) and returns their result as
// one overwrite adapter named name, made for this model: at every index
// the configuration touches, a quantized weight's tensor holds the code
// written there (adapter.NewCodeTensor: applied, it writes that code as it
// is, whatever the rounding, so all of it lands), a float weight's tensor
// the fused value in the weight's own dtype. The adapter records the
// model's fingerprint and each weight's base sha256, so it is refused on
// another model; its values are smaller than float ones (1 or 2 bytes per
// code), and it replaces a configuration of several adapters or one
// applied at some α by a single file with α 1.
func (m *Model) Bake(ctx context.Context, cfgs []patch.Config, name string, opts ...patch.Option) (*adapter.Adapter, error) {
	fused, err := m.Fuse(ctx, cfgs, opts...)
	if err != nil {
		return nil, err
	}
	a := &adapter.Adapter{Name: name, Semantics: adapter.Overwrite, DefaultAlpha: 1, ModelFingerprint: m.manifest.Fingerprint,
		Metadata: map[string]string{"shira.baked_from": bakedFrom(cfgs)}}
	for i := range m.manifest.Tensors {
		e := &m.manifest.Tensors[i]
		var idx []uint32
		for _, c := range cfgs {
			if t := c.Adapter.Tensor(e.Name); t != nil {
				idx = append(idx, t.Indices...)
			}
		}
		if len(idx) == 0 {
			continue
		}
		slices.Sort(idx)
		idx = slices.Compact(idx)
		data := fused[e.Name]
		sc, err := e.Scheme()
		if err != nil {
			return nil, fmt.Errorf("export: weight %s: %w", e.Name, err)
		}
		var t adapter.Tensor
		if sc != nil {
			codes := make([]int32, len(idx))
			for j, i := range idx {
				codes[j] = sc.Code(data, int(i))
			}
			if t, err = adapter.NewCodeTensor(e.Name, e.DType, e.LogicalShape(), idx, codes); err != nil {
				return nil, fmt.Errorf("export: %w", err)
			}
		} else {
			es := e.DType.Size()
			t = adapter.Tensor{Name: e.Name, DType: e.DType, ValueDType: e.DType, Shape: slices.Clone(e.Shape), Indices: idx,
				Values: make([]byte, len(idx)*es)}
			for j, i := range idx {
				copy(t.Values[j*es:(j+1)*es], data[int(i)*es:(int(i)+1)*es])
			}
		}
		if sum, ok := e.Sum(); ok {
			t.BaseSHA256 = sum
		}
		a.Tensors = append(a.Tensors, t)
	}
	if err := a.Validate(); err != nil {
		return nil, fmt.Errorf("export: baked adapter: %w", err)
	}
	return a, nil
}

// bakedFrom describes cfgs for the baked adapter's metadata: each
// adapter's name and α.
func bakedFrom(cfgs []patch.Config) string {
	s := ""
	for k, c := range cfgs {
		if k > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s:%g", c.Adapter.Name, c.Alpha)
	}
	return s
}
