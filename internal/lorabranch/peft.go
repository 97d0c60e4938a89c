package lorabranch

import (
	"fmt"
	"math"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/closest"
	"github.com/shira-ort/shira-ort/lora"
	"github.com/shira-ort/shira-ort/peft"
)

// FromPeft reads the PEFT LoRA checkpoint in dir (peft.Open, Checkpoint.Lora),
// maps its modules to the exposed weights of m (lora.Resolve: the same
// mapping `shira-ort fuse-lora` fuses with) and returns their params, keyed
// by the exposed names, as FromResolved lays them out. The targets of the
// branch model are the params' Target fields.
func FromPeft(dir string, m *export.Model) ([]Params, error) {
	ck, err := peft.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("lorabranch: %w", err)
	}
	mods, err := ck.Lora()
	if err != nil {
		return nil, fmt.Errorf("lorabranch: %w", err)
	}
	res, err := lora.Resolve(mods, m)
	if err != nil {
		return nil, fmt.Errorf("lorabranch: %w", err)
	}
	return FromResolved(res)
}

// FromResolved returns the params of resolved LoRA modules: the module's
// change s·lora_B·lora_A ([out, in], s = lora_alpha/r or PEFT's variant,
// peft.LoraModule.Scale) laid out as the exposed tensor stores the weight
// (peft.Target.Layout) and split as A·B with the scale folded into B:
//
//	[in, out] (MatMul's B, the layout a branch is made for): A = lora_Aᵀ [in, r],  B = s·lora_Bᵀ [r, out]
//	[out, in]:                                                A = lora_B [out, r],  B = s·lora_A [r, in]
//
// so W + A·B is the merged weight W + s·B·A in the stored layout. A scaled
// value that is not finite in float32 is an error wrapping ErrNonFinite.
func FromResolved(res []lora.Resolved) ([]Params, error) {
	out := make([]Params, 0, len(res))
	for i := range res {
		mod, t := &res[i].Module, &res[i].Target
		name := t.Entry.Name
		r, in, o := mod.R, mod.In, mod.Out
		if r <= 0 || len(mod.A) != r*in || len(mod.B) != o*r {
			return nil, fmt.Errorf("lorabranch: module %s: A has %d values and B %d for r=%d in=%d out=%d", mod.Module, len(mod.A), len(mod.B), r, in, o)
		}
		sh := t.Entry.Shape
		p := Params{Branch: Branch{Target: Target{Weight: name, Rank: r}}}
		p.A = make([]float32, 0, len(mod.A))
		p.B = make([]float32, 0, len(mod.B))
		s := float64(mod.Scale)
		scaled := func(v float32) (float32, error) {
			x := float32(s * float64(v))
			if math.IsInf(float64(x), 0) || math.IsNaN(float64(x)) {
				return 0, fmt.Errorf("%w: module %s: scale %g times lora value %g is %g in float32", ErrNonFinite, mod.Module, s, v, x)
			}
			return x, nil
		}
		switch t.Layout {
		case peft.InOut:
			if len(sh) != 2 || sh[0] != int64(in) || sh[1] != int64(o) {
				return nil, fmt.Errorf("lorabranch: module %s: exposed %s has shape %v, want [in, out] = [%d, %d]", mod.Module, closest.Quote(name), sh, in, o)
			}
			p.K, p.N = in, o
			for k := range in {
				for j := range r {
					p.A = append(p.A, mod.A[j*in+k])
				}
			}
			for j := range r {
				for n := range o {
					v, err := scaled(mod.B[n*r+j])
					if err != nil {
						return nil, err
					}
					p.B = append(p.B, v)
				}
			}
		case peft.OutIn:
			if len(sh) != 2 || sh[0] != int64(o) || sh[1] != int64(in) {
				return nil, fmt.Errorf("lorabranch: module %s: exposed %s has shape %v, want [out, in] = [%d, %d]", mod.Module, closest.Quote(name), sh, o, in)
			}
			p.K, p.N = o, in
			p.A = append(p.A, mod.B...)
			for _, v := range mod.A {
				x, err := scaled(v)
				if err != nil {
					return nil, err
				}
				p.B = append(p.B, x)
			}
		default:
			return nil, fmt.Errorf("lorabranch: module %s: unknown layout %v", mod.Module, t.Layout)
		}
		out = append(out, p)
	}
	return out, nil
}
