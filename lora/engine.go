package lora

import (
	"context"
	"fmt"
	"sync"

	"github.com/shira-ort/shira-ort/internal/dense"
	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/peft"
	"github.com/shira-ort/shira-ort/tensor"
)

// Engine computes LoRA products scale·B·A: with BLAS (see AddInPlace)
// when a BLAS library is available, else with ONNX Runtime. It is safe
// for concurrent use; Close releases its sessions.
type Engine struct {
	mu       sync.Mutex
	sessions [2]*ort.Session // indexed by peft.Layout
}

// NewEngine builds the product graphs and opens them in CPU sessions with
// opts (nil: ORT defaults). ort.Init must succeed.
func NewEngine(opts *ort.Options) (*Engine, error) {
	e := &Engine{}
	for _, layout := range []peft.Layout{peft.OutIn, peft.InOut} {
		s, err := ort.OpenModelData(context.Background(), productGraph(layout == peft.InOut).Bytes(), opts)
		if err != nil {
			e.Close()
			return nil, fmt.Errorf("lora: product session: %w", err)
		}
		e.sessions[layout] = s
	}
	return e, nil
}

// productGraph is D = (B·A)·s, or Transpose(B·A)·s, over float32 inputs
// B [out, r], A [r, in], s [1].
func productGraph(transpose bool) *onnxwire.Builder {
	b := onnxwire.NewBuilder()
	b.GraphName = "lora_product"
	b.AddInput("B", tensor.Float32, []int64{-1, -1}, "out", "r")
	b.AddInput("A", tensor.Float32, []int64{-1, -1}, "r", "in")
	b.AddInput("s", tensor.Float32, []int64{1})
	b.AddNode("matmul", "MatMul", []string{"B", "A"}, []string{"BA"})
	prod := "BA"
	if transpose {
		b.AddNode("transpose", "Transpose", []string{"BA"}, []string{"BAt"}, onnxwire.IntsAttr("perm", 1, 0))
		prod = "BAt"
	}
	b.AddNode("scale", "Mul", []string{prod, "s"}, []string{"D"})
	if transpose {
		b.AddOutput("D", tensor.Float32, []int64{-1, -1}, "in", "out")
	} else {
		b.AddOutput("D", tensor.Float32, []int64{-1, -1}, "out", "in")
	}
	return b
}

// Delta returns scale·B·A of module m as float32 in the given layout:
// [out, in] for OutIn, [in, out] for InOut. (lora_B·lora_A is [out, in]
// whatever fan_in_fan_out says; the exposed tensor's layout decides.) A
// product with a NaN or infinite value is an error wrapping ErrNonFinite.
// It runs on BLAS when one is available (BLAS), else on ONNX Runtime
// (DeltaORT).
func (e *Engine) Delta(ctx context.Context, m *peft.LoraModule, layout peft.Layout) ([]float32, error) {
	if _, err := BLAS(); err != nil {
		return e.DeltaORT(ctx, m, layout)
	}
	if err := checkModule(m); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d := make([]float32, m.Out*m.In)
	if err := AddInPlace(tensor.Bytes(d), tensor.Float32, layout, m.Out, m.In, 0, TermOf(m, 1)); err != nil {
		return nil, fmt.Errorf("lora: module %s: %w", m.Module, err)
	}
	return d, checkDelta(d, m, layout)
}

func checkModule(m *peft.LoraModule) error {
	if m.R <= 0 || len(m.A) != m.R*m.In || len(m.B) != m.Out*m.R {
		return fmt.Errorf("lora: module %s: A has %d values, B %d, for r=%d in=%d out=%d", m.Module, len(m.A), len(m.B), m.R, m.In, m.Out)
	}
	return nil
}

func checkDelta(d []float32, m *peft.LoraModule, layout peft.Layout) error {
	if k := dense.NonFinite(d, tensor.Float32); k >= 0 {
		return fmt.Errorf("%w: module %s: scale·B·A (scale %g) is %g at flat index %d of its %v layout", ErrNonFinite, m.Module, m.Scale, d[k], k, layout)
	}
	return nil
}

// DeltaORT is Delta computed by ONNX Runtime (MatMul, Mul and, for InOut,
// Transpose) whether or not BLAS is available: the reference the
// benchmarks call the PEFT-style merge.
func (e *Engine) DeltaORT(ctx context.Context, m *peft.LoraModule, layout peft.Layout) ([]float32, error) {
	if err := checkModule(m); err != nil {
		return nil, err
	}
	e.mu.Lock()
	s := e.sessions[layout]
	e.mu.Unlock()
	if s == nil {
		return nil, fmt.Errorf("lora: engine closed")
	}
	bt, err := tensor.FromFloat32([]int64{int64(m.Out), int64(m.R)}, m.B)
	if err != nil {
		return nil, err
	}
	at, err := tensor.FromFloat32([]int64{int64(m.R), int64(m.In)}, m.A)
	if err != nil {
		return nil, err
	}
	st, _ := tensor.FromFloat32([]int64{1}, []float32{m.Scale})
	out, err := s.Run(ctx, map[string]*tensor.Tensor{"B": bt, "A": at, "s": st})
	if err != nil {
		return nil, fmt.Errorf("lora: module %s: %w", m.Module, err)
	}
	d, err := out["D"].AsFloat32()
	if err != nil {
		return nil, err
	}
	return d, checkDelta(d, m, layout)
}

// Close releases the sessions.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var first error
	for i, s := range e.sessions {
		if s != nil {
			if err := s.Close(); err != nil && first == nil {
				first = err
			}
			e.sessions[i] = nil
		}
	}
	return first
}
