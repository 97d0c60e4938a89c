package lora

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/dense"
	"github.com/shira-ort/shira-ort/peft"
)

// ErrNonFinite is peft.ErrNonFinite. Delta, Fuse and ToShira wrap it when
// scale·B·A, a fused weight or a stored value would be NaN or infinite.
var ErrNonFinite = peft.ErrNonFinite

// Resolved is a LoRA module with the exposed tensor it adapts.
type Resolved struct {
	Module peft.LoraModule
	Target peft.Target
}

// Resolve maps every module to its exposed tensor, checking that the
// tensor's features match lora_A/lora_B and that no two modules share one.
func Resolve(mods []peft.LoraModule, m *export.Model) ([]Resolved, error) {
	mp := peft.NewMapper(m)
	used := map[string]string{}
	out := make([]Resolved, 0, len(mods))
	for _, mod := range mods {
		t, err := mp.Resolve(mod.Module)
		if err != nil {
			return nil, err
		}
		if t.In != mod.In || t.Out != mod.Out {
			return nil, fmt.Errorf("%w: module %s: lora_B·lora_A is [%d, %d] but %s is %v (out=%d, in=%d as read by its consumer)",
				peft.ErrCheckpoint, mod.Module, mod.Out, mod.In, t.Entry.Name, t.Entry.Shape, t.Out, t.In)
		}
		if prev, dup := used[t.Entry.Name]; dup {
			return nil, fmt.Errorf("%w: modules %s and %s both map to %s", peft.ErrCheckpoint, prev, mod.Module, t.Entry.Name)
		}
		used[t.Entry.Name] = mod.Module
		out = append(out, Resolved{Module: mod, Target: t})
	}
	return out, nil
}

// FuseStats reports a fusion.
type FuseStats struct {
	Tensors  int
	Elements int64
	// Product is the time spent in ORT computing scale·B·A, Add the time
	// spent adding it into the weights.
	Product, Add time.Duration
}

// Fuse adds scale·B·A of every resolved module into weights (exposed
// tensor name -> bytes, as export.Model.ReadWeights returns), in place. fp16
// and bf16 weights are updated in float32 and rounded to nearest even. ctx
// is checked between modules.
//
// Fuse changes weights only when every module succeeded: the sums are
// computed into scratch copies of the adapted tensors first (so it needs
// that much memory again) and copied in at the end. A product or a sum
// that is NaN or infinite where the weight was finite is an error wrapping
// ErrNonFinite, naming the module.
func Fuse(ctx context.Context, e *Engine, weights map[string][]byte, mods []Resolved) (FuseStats, error) {
	var st FuseStats
	sums := make([][]byte, len(mods))
	for i := range mods {
		if err := ctx.Err(); err != nil {
			return FuseStats{}, err
		}
		r := &mods[i]
		name := r.Target.Entry.Name
		w, ok := weights[name]
		if !ok {
			return FuseStats{}, fmt.Errorf("lora: no data for exposed weight %q", name)
		}
		t0 := time.Now()
		d, err := e.Delta(ctx, &r.Module, r.Target.Layout)
		if err != nil {
			return FuseStats{}, err
		}
		t1 := time.Now()
		sum := bytes.Clone(w)
		dt := r.Target.Entry.DType
		if err := dense.Add(sum, dt, d); err != nil {
			return FuseStats{}, fmt.Errorf("lora: %s: %w", name, err)
		}
		if k := dense.NewNonFinite(sum, w, dt); k >= 0 {
			return FuseStats{}, fmt.Errorf("%w: module %s: adding scale·B·A (%g at flat index %d) to %s makes that %v element non-finite",
				ErrNonFinite, r.Module.Module, d[k], k, name, dt)
		}
		sums[i] = sum
		st.Product += t1.Sub(t0)
		st.Add += time.Since(t1)
		st.Tensors++
		st.Elements += int64(len(d))
	}
	for i := range mods {
		copy(weights[mods[i].Target.Entry.Name], sums[i])
	}
	return st, nil
}

// TopKReport describes the SHiRA approximation of one LoRA module.
type TopKReport struct {
	Module string `json:"module"`
	Tensor string `json:"tensor"`
	NNZ    int    `json:"nnz"`
	// RelError is ‖ΔW − top-k(ΔW)‖_F / ‖ΔW‖_F; Energy is the kept fraction
	// of ‖ΔW‖_F² (RelError² + Energy = 1).
	RelError float64 `json:"rel_error"`
	Energy   float64 `json:"energy"`
}

// sortReports orders reports by module.
func sortReports(r []TopKReport) {
	sort.Slice(r, func(i, j int) bool { return r[i].Module < r[j].Module })
}

// relError returns sqrt(1 - kept/total) and kept/total, guarding total 0.
func relError(kept, total float64) (float64, float64) {
	if total == 0 {
		return 0, 1
	}
	e := kept / total
	return math.Sqrt(max(0, 1-e)), e
}
