package dense

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/shira-ort/shira-ort/tensor"
)

// TestAdd compares Add with the per-element definition (widen, add in
// float32, round to nearest even) for every float dtype, on lengths around
// the block size, with values that reach fp16's subnormals and overflow.
func TestAdd(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, dt := range []tensor.DType{tensor.Float32, tensor.Float16, tensor.BFloat16} {
		for _, n := range []int{0, 1, block - 1, block, block + 1, 3*block + 17} {
			d := make([]float32, n)
			w := make([]byte, n*dt.Size())
			want := make([]byte, len(w))
			for i := range d {
				scale := float32(math.Pow(2, float64(rng.IntN(40)-24))) // 2^-24 .. 2^15
				d[i] = float32(rng.NormFloat64()) * scale
				x := float32(rng.NormFloat64()) * scale
				switch dt {
				case tensor.Float32:
					tensor.Float32s(w)[i] = x
					tensor.Float32s(want)[i] = x + d[i]
				case tensor.Float16:
					h := tensor.Float32ToFloat16(x)
					tensor.Uint16s(w)[i] = h
					tensor.Uint16s(want)[i] = tensor.Float32ToFloat16(tensor.Float16ToFloat32(h) + d[i])
				default:
					h := tensor.Float32ToBFloat16(x)
					tensor.Uint16s(w)[i] = h
					tensor.Uint16s(want)[i] = tensor.Float32ToBFloat16(tensor.BFloat16ToFloat32(h) + d[i])
				}
			}
			if err := Add(w, dt, d); err != nil {
				t.Fatal(err)
			}
			if string(w) != string(want) {
				t.Errorf("%v n=%d: Add differs from the per-element sum", dt, n)
			}
		}
	}
}

func TestAddRefuses(t *testing.T) {
	if err := Add(make([]byte, 6), tensor.Float32, make([]float32, 2)); err == nil {
		t.Error("a length mismatch was accepted")
	}
	if err := Add(make([]byte, 8), tensor.Int32, make([]float32, 2)); err == nil {
		t.Error("int32 was accepted")
	}
}
