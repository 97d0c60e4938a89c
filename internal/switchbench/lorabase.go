package switchbench

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"

	"github.com/shira-ort/shira-ort/lora"
	"github.com/shira-ort/shira-ort/peft"
	"github.com/shira-ort/shira-ort/tensor"
)

// The LoRA baseline: W ± scale·B·A, the product computed by ONNX Runtime
// (lora.Engine.Delta: MatMul + Mul, plus Transpose for [in, out] weights)
// and added into W by a parallel loop (fp16 through a lookup table and an
// inlined rounding, so the baseline is not slowed by per-element calls).

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
// using threads goroutines.
func addInto(w []byte, dt tensor.DType, d []float32, threads int) error {
	if len(w) != len(d)*dt.Size() {
		return fmt.Errorf("switchbench: %d bytes of %v for %d delta values", len(w), dt, len(d))
	}
	threads = max(1, threads)
	part := (len(d)/threads + 1023) &^ 1023
	var wg sync.WaitGroup
	for k := range threads {
		lo, hi := min(k*part, len(d)), min((k+1)*part, len(d))
		wg.Go(func() { addRange(w, dt, d, lo, hi) })
	}
	wg.Wait()
	return nil
}

func addRange(w []byte, dt tensor.DType, d []float32, lo, hi int) {
	d = d[lo:hi]
	switch dt {
	case tensor.Float32:
		f := tensor.Float32s(w)[lo:hi]
		f = f[:len(d)]
		for i, v := range d {
			f[i] += v
		}
	case tensor.Float16:
		h, tab := tensor.Uint16s(w)[lo:hi], tensor.Float16Table()
		h = h[:len(d)]
		for i, v := range d {
			// tensor.Float32ToFloat16's normal range, written out: the call would not inline.
			x := tab[h[i]] + v
			u := math.Float32bits(x)
			if a := u & 0x7fffffff; a-0x38800000 < 0x47800000-0x38800000 {
				r := a - 0x38000000
				r += 0x0fff + (r>>13)&1
				h[i] = uint16(u>>16)&0x8000 | uint16(r>>13)
			} else {
				h[i] = tensor.Float32ToFloat16(x)
			}
		}
	default:
		h := tensor.Uint16s(w)[lo:hi]
		h = h[:len(d)]
		for i, v := range d {
			h[i] = tensor.Float32ToBFloat16(tensor.BFloat16ToFloat32(h[i]) + v)
		}
	}
}
