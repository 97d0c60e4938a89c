package switchbench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"

	"github.com/shira-ort/shira-ort/internal/dense"
	"github.com/shira-ort/shira-ort/lora"
	"github.com/shira-ort/shira-ort/peft"
	"github.com/shira-ort/shira-ort/tensor"
)

// The LoRA baselines.
//
// The headline is the strongest switch a careful engineer would write
// (lora.AddInPlace): the outgoing adapter's factors with −scale and the
// incoming one's with +scale concatenated (K = r_old + r_new), one
// in-place BLAS GEMM with beta = 1 straight into W, so W is read and
// written once; fp16/bf16 through float32 tiles rounded once.
//
// Also measured, and labelled as such: one in-place GEMM per direction
// (unfuse, then fuse: W read and written twice), and the PEFT-style merge
// the first benchmarks used (scale·B·A as a dense tensor from ONNX
// Runtime, then added into W in a second pass, per direction).

// LoraRank is PEFT's equal-parameter rank for nnz sparse entries on an
// out×in weight: nnz = r·(in+out), rounded to nearest, at least 1.
func LoraRank(nnz, in, out int) int {
	return max(1, int(math.Round(float64(nnz)/float64(in+out))))
}

// randomLora returns a LoRA module of rank r with small random factors.
func randomLora(name string, r, in, out int, rng *rand.Rand) peft.LoraModule {
	m := peft.LoraModule{Module: name, R: r, In: in, Out: out, A: make([]float32, r*in), B: make([]float32, out*r), Scale: 1}
	for i := range m.A {
		m.A[i] = (rng.Float32()*2 - 1) * 0.01
	}
	for i := range m.B {
		m.B[i] = (rng.Float32()*2 - 1) * 0.01
	}
	return m
}

// switchInPlace moves the weight w (dtype dt, stored in layout) from LoRA
// old to LoRA nu (either may be nil: a plain fuse or unfuse) with one
// in-place GEMM on threads threads.
func switchInPlace(w []byte, dt tensor.DType, layout peft.Layout, old, nu *peft.LoraModule, threads int) error {
	var terms []lora.Term
	m := old
	if old != nil {
		terms = append(terms, lora.TermOf(old, -1))
	}
	if nu != nil {
		terms = append(terms, lora.TermOf(nu, 1))
		m = nu
	}
	if m == nil {
		return nil
	}
	if err := lora.AddInPlace(w, dt, layout, m.Out, m.In, threads, terms...); err != nil {
		return fmt.Errorf("switchbench: in-place lora: %w", err)
	}
	return nil
}

// mergePEFT adds sign·scale·B·A of m into the weight w the PEFT-style
// way: the product computed by ONNX Runtime as a dense tensor
// (lora.Engine.DeltaORT), then added by lora's own add (internal/dense)
// split over threads goroutines.
func mergePEFT(e *lora.Engine, w []byte, dt tensor.DType, m *peft.LoraModule, layout peft.Layout, sign float32, threads int) error {
	mm := *m
	mm.Scale *= sign
	d, err := e.DeltaORT(context.Background(), &mm, layout)
	if err != nil {
		return fmt.Errorf("switchbench: lora product: %w", err)
	}
	return addInto(w, dt, d, threads)
}

// addInto adds d into the weight w of dtype dt (rounding to nearest even)
// using threads goroutines, each running dense.Add on its part.
func addInto(w []byte, dt tensor.DType, d []float32, threads int) error {
	if len(w) != len(d)*dt.Size() {
		return fmt.Errorf("switchbench: %d bytes of %v for %d delta values", len(w), dt, len(d))
	}
	threads = max(1, threads)
	part := (len(d)/threads + 1023) &^ 1023
	var wg sync.WaitGroup
	errs := make([]error, threads)
	for k := range threads {
		lo, hi := min(k*part, len(d)), min((k+1)*part, len(d))
		wg.Go(func() { errs[k] = dense.Add(w[lo*dt.Size():hi*dt.Size()], dt, d[lo:hi]) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("switchbench: %w", err)
	}
	return nil
}
