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

// The LoRA baseline: W ± scale·B·A, the product computed by ONNX Runtime
// (lora.Engine.Delta: MatMul + Mul, plus Transpose for [in, out] weights)
// and added into W by lora's own add (internal/dense), split over threads.

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

// fuseLora adds sign·scale·B·A of m into the weight w of dtype dt stored
// in layout, with the product run by e and the add split over threads.
func fuseLora(e *lora.Engine, w []byte, dt tensor.DType, m *peft.LoraModule, layout peft.Layout, sign float32, threads int) error {
	mm := *m
	mm.Scale *= sign
	d, err := e.Delta(context.Background(), &mm, layout)
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
