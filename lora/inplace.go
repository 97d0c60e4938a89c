package lora

import (
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/shira-ort/shira-ort/internal/blas"
	"github.com/shira-ort/shira-ort/peft"
	"github.com/shira-ort/shira-ort/tensor"
)

// ErrNoBLAS is wrapped by AddInPlace when no BLAS library is available
// (OpenBLAS, loaded at run time: Debian's libopenblas0-pthread, or the
// CBLAS library named by the SHIRA_BLAS environment variable).
var ErrNoBLAS = blas.ErrUnavailable

// BLAS reports the BLAS library AddInPlace uses ("libopenblas.so.0
// (OpenBLAS Cooperlake)"), or an error wrapping ErrNoBLAS saying why
// there is none.
func BLAS() (string, error) {
	if err := blas.Load(); err != nil {
		return "", err
	}
	return blas.Name(), nil
}

// Term is one LoRA product Scale·B·A: B is lora_B [out, R], A is lora_A
// [R, in], row-major float32 (peft.LoraModule's fields).
type Term struct {
	B, A  []float32
	R     int
	Scale float32
}

// TermOf returns the term of module m, times sign (−1 to unfuse).
func TermOf(m *peft.LoraModule, sign float32) Term {
	return Term{B: m.B, A: m.A, R: m.R, Scale: sign * m.Scale}
}

// tileBytes bounds the float32 product tile of the fp16/bf16 path (a tile
// is computed, then added into the weight while it is still in cache).
var tileBytes = 1 << 20 // a variable for tests

// AddInPlace adds the sum of every term's Scale·B·A into the weight w in
// place: w holds out×in features as raw little-endian elements of dt
// (Float32, Float16 or BFloat16), laid out [out, in] (peft.OutIn) or
// [in, out] (peft.InOut).
//
// All terms are one GEMM over the concatenated factors (K = the sum of
// their ranks, the scales folded into a copy of B), so a LoRA switch —
// the outgoing adapter with −Scale and the incoming one with +Scale —
// reads and writes w once:
//
//   - fp32: a single SGEMM with beta = 1 straight into w;
//   - fp16, bf16: the product of a tile of rows at a time (about 1 MiB of
//     float32), added to the widened weight and rounded to nearest even
//     in the same pass, tiles shared by threads workers.
//
// threads is the number of BLAS threads (fp32) or workers (fp16, bf16),
// 0 meaning one per core. The sums are those of BLAS's float32
// accumulation, whose order differs from a naive loop: each result is
// within (K+2)·2⁻²⁴·(|w| + Σ|Scale·b·a|) of the exact sum before the final
// rounding to dt. Nothing is checked for NaN or infinity (Fuse does).
// Shapes are validated before w is written.
func AddInPlace(w []byte, dt tensor.DType, layout peft.Layout, out, in, threads int, terms ...Term) error {
	if out <= 0 || in <= 0 {
		return fmt.Errorf("lora: weight is %d×%d", out, in)
	}
	if dt != tensor.Float32 && dt != tensor.Float16 && dt != tensor.BFloat16 {
		return fmt.Errorf("lora: in-place LoRA on a %v weight (want float32, float16 or bfloat16)", dt)
	}
	if len(w) != out*in*dt.Size() {
		return fmt.Errorf("lora: weight has %d bytes, want %d×%d %v", len(w), out, in, dt)
	}
	if layout != peft.OutIn && layout != peft.InOut {
		return fmt.Errorf("lora: layout %v", layout)
	}
	k := 0
	for i, t := range terms {
		if t.R <= 0 || len(t.B) != out*t.R || len(t.A) != t.R*in {
			return fmt.Errorf("lora: term %d: B has %d values, A %d, for r=%d out=%d in=%d", i, len(t.B), len(t.A), t.R, out, in)
		}
		k += t.R
	}
	if k == 0 {
		return nil
	}
	if err := blas.Load(); err != nil {
		return fmt.Errorf("lora: in-place LoRA: %w", err)
	}
	bc, ac := concat(terms, out, in, k)
	// rows × cols of w as stored; the product of stored rows [r0, r1) is
	// op(X)[r0:r1, :] · op(Y)
	rows, cols := out, in
	if layout == peft.InOut {
		rows, cols = in, out
	}
	gemm := func(r0, r1 int, c []float32, beta float32, th int) error {
		g := &blas.Gemm{M: r1 - r0, N: cols, K: k, Alpha: 1, Beta: beta, C: c, LDC: cols, Threads: th}
		if layout == peft.OutIn { // w[o, i] += Bc[o, :]·Ac[:, i]
			g.A, g.LDA, g.B, g.LDB = bc[r0*k:r1*k], k, ac, in
		} else { // w[i, o] += Ac[:, i]ᵀ·Bc[o, :]ᵀ
			g.TransA, g.TransB = true, true
			g.A, g.LDA, g.B, g.LDB = ac[r0:], in, bc, k
		}
		return g.Run()
	}
	if dt == tensor.Float32 {
		return gemm(0, rows, tensor.Float32s(w), 1, threads)
	}
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	return addTiles(w, dt, rows, cols, threads, gemm)
}

// concat returns [s₁B₁ | s₂B₂ | …] ([out, k]) and [A₁; A₂; …] ([k, in]).
func concat(terms []Term, out, in, k int) (bc, ac []float32) {
	if len(terms) == 1 && terms[0].Scale == 1 {
		return terms[0].B, terms[0].A
	}
	bc, ac = make([]float32, out*k), make([]float32, 0, k*in)
	c := 0
	for _, t := range terms {
		for o := range out {
			dst, src := bc[o*k+c:o*k+c+t.R], t.B[o*t.R:(o+1)*t.R]
			for j, v := range src {
				dst[j] = t.Scale * v
			}
		}
		ac = append(ac, t.A...)
		c += t.R
	}
	return bc, ac
}

// addTiles runs the fp16/bf16 path: workers take tiles of rows, widen
// them to float32 (F16C where the CPU has it), add the tile's product with
// a one-thread GEMM (beta 1) and round back once.
func addTiles(w []byte, dt tensor.DType, rows, cols, workers int, gemm func(r0, r1 int, c []float32, beta float32, th int) error) error {
	tile := max(1, tileBytes/(4*cols))
	h := tensor.Uint16s(w)
	var (
		mu   sync.Mutex
		next int
		wg   sync.WaitGroup
	)
	errs := make([]error, workers)
	for k := range workers {
		wg.Go(func() {
			buf := make([]float32, tile*cols)
			for {
				mu.Lock()
				r0 := next
				next += tile
				mu.Unlock()
				if r0 >= rows {
					return
				}
				r1 := min(r0+tile, rows)
				p := buf[:(r1-r0)*cols]
				hs := h[r0*cols : r1*cols]
				if dt == tensor.Float16 {
					// widen into the tile and let the GEMM add into it (beta 1)
					blas.WidenFloat16(p, hs)
				} else {
					for i, x := range hs {
						p[i] = tensor.BFloat16ToFloat32(x)
					}
				}
				if err := gemm(r0, r1, p, 1, 1); err != nil {
					errs[k] = err
					return
				}
				if dt == tensor.Float16 {
					blas.NarrowFloat16(hs, p)
				} else {
					for i, v := range p {
						hs[i] = tensor.Float32ToBFloat16(v)
					}
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
