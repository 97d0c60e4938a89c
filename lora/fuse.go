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
	// Kernel says how the products were added: "in-place BLAS" and the
	// library's name, or "ONNX Runtime product + add" without BLAS.
	Kernel string
	// Product is the time spent computing scale·B·A (with BLAS, adding it
	// in too: one GEMM with beta 1), Add the time spent adding it into the
	// weights otherwise.
	Product, Add time.Duration
}

// Fuse adds scale·B·A of every resolved module into weights (exposed
// tensor name -> bytes, as export.Model.ReadWeights returns), in place. fp16
// and bf16 weights are updated in float32 and rounded to nearest even. ctx
// is checked between modules. With a BLAS library (see BLAS) each module
// is one in-place GEMM (AddInPlace) and e may be nil; without one the
// products are computed by e with ONNX Runtime and added.
//
// Fuse changes weights only when every module succeeded: the sums are
// computed into scratch copies of the adapted tensors first (so it needs
// that much memory again) and copied in at the end. A product or a sum
// that is NaN or infinite where the weight was finite is an error wrapping
// ErrNonFinite, naming the module.
func Fuse(ctx context.Context, e *Engine, weights map[string][]byte, mods []Resolved) (FuseStats, error) {
	var st FuseStats
	lib, blasErr := BLAS()
	if blasErr == nil {
		st.Kernel = "in-place BLAS GEMM, " + lib
	} else if e == nil {
		return FuseStats{}, fmt.Errorf("lora: fuse without an engine: %w", blasErr)
	} else {
		st.Kernel = "ONNX Runtime product + add"
	}
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
		dt := r.Target.Entry.DType
		m := &r.Module
		if err := checkModule(m); err != nil {
			return FuseStats{}, err
		}
		if len(w) != m.Out*m.In*dt.Size() {
			return FuseStats{}, fmt.Errorf("lora: %s: %d bytes for %d×%d %v", name, len(w), m.Out, m.In, dt)
		}
		sum := bytes.Clone(w)
		t0 := time.Now()
		if blasErr == nil {
			if err := AddInPlace(sum, dt, r.Target.Layout, m.Out, m.In, 0, TermOf(m, 1)); err != nil {
				return FuseStats{}, fmt.Errorf("lora: module %s: %w", m.Module, err)
			}
			st.Product += time.Since(t0)
		} else {
			d, err := e.DeltaORT(ctx, m, r.Target.Layout)
			if err != nil {
				return FuseStats{}, err
			}
			t1 := time.Now()
			if err := dense.Add(sum, dt, d); err != nil {
				return FuseStats{}, fmt.Errorf("lora: %s: %w", name, err)
			}
			st.Product += t1.Sub(t0)
			st.Add += time.Since(t1)
		}
		if k := dense.NewNonFinite(sum, w, dt); k >= 0 {
			return FuseStats{}, fmt.Errorf("%w: module %s: adding scale·B·A to %s makes its %v element at flat index %d non-finite",
				ErrNonFinite, m.Module, name, dt, k)
		}
		sums[i] = sum
		st.Tensors++
		st.Elements += int64(m.Out * m.In)
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
