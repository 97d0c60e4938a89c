package lora_test

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"testing"

	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/lora"
	"github.com/shira-ort/shira-ort/peft"
	"github.com/shira-ort/shira-ort/tensor"
)

// requireBLAS is orttest.RequireBLAS.
var requireBLAS = orttest.RequireBLAS

func randTerm(rng *rand.Rand, r, out, in int, scale float32) lora.Term {
	t := lora.Term{B: make([]float32, out*r), A: make([]float32, r*in), R: r, Scale: scale}
	for i := range t.B {
		t.B[i] = float32(rng.NormFloat64())
	}
	for i := range t.A {
		t.A[i] = float32(rng.NormFloat64())
	}
	return t
}

// widen returns element i of w (dtype dt) as float64; narrow rounds v to
// dt and back (monotone, so it maps a bound on the sum to a bound on the
// stored result).
func widen(w []byte, dt tensor.DType, i int) float64 {
	switch dt {
	case tensor.Float16:
		return float64(tensor.Float16ToFloat32(tensor.Uint16s(w)[i]))
	case tensor.BFloat16:
		return float64(tensor.BFloat16ToFloat32(tensor.Uint16s(w)[i]))
	}
	return float64(tensor.Float32s(w)[i])
}

func narrow(v float64, dt tensor.DType) float64 {
	f := float32(v)
	switch dt {
	case tensor.Float16:
		return float64(tensor.Float16ToFloat32(tensor.Float32ToFloat16(f)))
	case tensor.BFloat16:
		return float64(tensor.BFloat16ToFloat32(tensor.Float32ToBFloat16(f)))
	}
	return float64(f)
}

// TestAddInPlaceWithinBound checks every element against the exact sum
// w + Σ s·B·A (float64): the stored result must be the rounding to dt of
// a float32 value within the documented accumulation bound.
func TestAddInPlaceWithinBound(t *testing.T) {
	requireBLAS(t)
	defer lora.SetTileBytes(4 * 7 * 301)() // tiles of a few rows: several per weight, the last one short
	rng := rand.New(rand.NewPCG(7, 7))
	for _, dt := range []tensor.DType{tensor.Float32, tensor.Float16, tensor.BFloat16} {
		for _, layout := range []peft.Layout{peft.OutIn, peft.InOut} {
			for _, th := range []int{1, 2} {
				out, in := 67, 300+th // tiles of the fp16 path end mid-weight
				terms := []lora.Term{randTerm(rng, 3, out, in, -0.5), randTerm(rng, 5, out, in, 0.25)}
				if th == 2 {
					terms = terms[1:]
				}
				w := make([]byte, out*in*dt.Size())
				for i := range out * in {
					v := float32(rng.NormFloat64())
					switch dt {
					case tensor.Float16:
						tensor.Uint16s(w)[i] = tensor.Float32ToFloat16(v)
					case tensor.BFloat16:
						tensor.Uint16s(w)[i] = tensor.Float32ToBFloat16(v)
					default:
						tensor.Float32s(w)[i] = v
					}
				}
				base := bytes.Clone(w)
				if err := lora.AddInPlace(w, dt, layout, out, in, th, terms...); err != nil {
					t.Fatal(err)
				}
				k := 0
				for _, tm := range terms {
					k += tm.R
				}
				for o := range out {
					for i := range in {
						idx := o*in + i
						if layout == peft.InOut {
							idx = i*out + o
						}
						exact, mag := widen(base, dt, idx), math.Abs(widen(base, dt, idx))
						for _, tm := range terms {
							for p := range tm.R {
								x := float64(tm.Scale) * float64(tm.B[o*tm.R+p]) * float64(tm.A[p*in+i])
								exact += x
								mag += math.Abs(x)
							}
						}
						bound := float64(k+2) * 0x1p-24 * mag
						got, lo, hi := widen(w, dt, idx), narrow(exact-bound, dt), narrow(exact+bound, dt)
						if got < lo || got > hi {
							t.Fatalf("%v %v threads=%d: w[%d,%d] = %g, want within [%g, %g] (exact %g)", dt, layout, th, o, i, got, lo, hi, exact)
						}
					}
				}
			}
		}
	}
}

// TestAddInPlaceSwitchIsOneGEMM checks that unfusing one adapter and
// fusing another in one call (−s·B₁A₁ + s·B₂A₂) equals doing both in turn
// within the bound, i.e. the concatenation keeps each term's sign and
// scale.
func TestAddInPlaceSwitchIsOneGEMM(t *testing.T) {
	requireBLAS(t)
	rng := rand.New(rand.NewPCG(3, 4))
	out, in := 40, 24
	m1, m2 := randTerm(rng, 2, out, in, 2), randTerm(rng, 4, out, in, 0.5)
	w1, w2 := make([]float32, out*in), make([]float32, out*in)
	for i := range w1 {
		w1[i] = float32(rng.NormFloat64())
	}
	copy(w2, w1)
	neg := m1
	neg.Scale = -m1.Scale
	if err := lora.AddInPlace(tensor.Bytes(w1), tensor.Float32, peft.OutIn, out, in, 0, neg, m2); err != nil {
		t.Fatal(err)
	}
	for _, tm := range []lora.Term{neg, m2} {
		if err := lora.AddInPlace(tensor.Bytes(w2), tensor.Float32, peft.OutIn, out, in, 0, tm); err != nil {
			t.Fatal(err)
		}
	}
	for i := range w1 {
		if d := math.Abs(float64(w1[i] - w2[i])); d > 1e-4*(1+math.Abs(float64(w2[i]))) {
			t.Fatalf("w[%d]: one GEMM %g, two %g", i, w1[i], w2[i])
		}
	}
}

func TestAddInPlaceRejectsBadShapesUnchanged(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	good := randTerm(rng, 2, 4, 3, 1)
	w := tensor.Bytes([]float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	before := bytes.Clone(w)
	for _, c := range []struct {
		w       []byte
		dt      tensor.DType
		out, in int
		terms   []lora.Term
	}{
		{w, tensor.Float32, 3, 4, []lora.Term{good}},                                   // term shaped for 4×3
		{w[:44], tensor.Float32, 4, 3, []lora.Term{good}},                              // short weight
		{w, tensor.Int8, 4, 12, []lora.Term{good}},                                     // not a float
		{w, tensor.Float32, 4, 3, []lora.Term{good, {B: good.B, A: good.A[:5], R: 2}}}, // second term short, first fine
		{w, tensor.Float32, 0, 3, nil},
	} {
		if err := lora.AddInPlace(c.w, c.dt, peft.OutIn, c.out, c.in, 1, c.terms...); err == nil {
			t.Fatalf("%v %d×%d: no error", c.dt, c.out, c.in)
		}
		if !bytes.Equal(w, before) {
			t.Fatal("weight changed on error")
		}
	}
}

// TestAddInPlaceWithoutBLAS runs itself in a child process whose
// SHIRA_BLAS names no library: AddInPlace must fail with ErrNoBLAS and
// leave the weight alone. The child also runs the fusion and non-finite
// tests, which then take the ONNX Runtime product path.
func TestAddInPlaceWithoutBLAS(t *testing.T) {
	if os.Getenv("SHIRA_TEST_NO_BLAS_CHILD") == "1" {
		w := tensor.Bytes([]float32{1, 2})
		err := lora.AddInPlace(w, tensor.Float32, peft.OutIn, 1, 2, 1, lora.Term{B: []float32{1}, A: []float32{1, 1}, R: 1, Scale: 1})
		if !errors.Is(err, lora.ErrNoBLAS) || tensor.Float32s(w)[0] != 1 {
			t.Fatalf("err %v, w %v", err, tensor.Float32s(w))
		}
		if _, err := lora.BLAS(); !errors.Is(err, lora.ErrNoBLAS) {
			t.Fatalf("BLAS(): %v", err)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^(TestAddInPlaceWithoutBLAS|TestFuseMatchesTorch|TestNonFinite.*)$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "SHIRA_TEST_NO_BLAS_CHILD=1", "SHIRA_BLAS=/nonexistent/libcblas.so")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("--- PASS: TestFuseMatchesTorch")) {
		t.Fatalf("the child did not run the fusion test:\n%s", out)
	}
}
