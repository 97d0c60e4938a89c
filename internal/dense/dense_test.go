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

// NonFinite finds the values that overflow (or are NaN or infinite) once
// rounded to each dtype; NewNonFinite only the elements a sum made
// non-finite.
func TestNonFinite(t *testing.T) {
	inf, nan := float32(math.Inf(1)), float32(math.NaN())
	for _, c := range []struct {
		dt   tensor.DType
		v    []float32
		want int
	}{
		{tensor.Float32, []float32{1, math.MaxFloat32, -math.MaxFloat32}, -1},
		{tensor.Float32, []float32{1, 2, nan}, 2},
		{tensor.Float32, []float32{-inf}, 0},
		{tensor.Float16, []float32{65504, -65519}, -1}, // 65519 rounds down to 65504
		{tensor.Float16, []float32{1, 65520}, 1},       // rounds up to Inf
		{tensor.Float16, []float32{1, 1e5}, 1},
		{tensor.BFloat16, []float32{1e5, 3e38}, -1},
		{tensor.BFloat16, []float32{1, math.MaxFloat32}, 1},
		{tensor.BFloat16, []float32{nan}, 0},
	} {
		if got := NonFinite(c.v, c.dt); got != c.want {
			t.Errorf("NonFinite(%v, %v) = %d, want %d", c.v, c.dt, got, c.want)
		}
	}

	base := tensor.Bytes([]float32{1, inf, nan, 1})
	sum := tensor.Bytes([]float32{2, inf, nan, inf})
	if got := NewNonFinite(sum, base, tensor.Float32); got != 3 {
		t.Errorf("float32: NewNonFinite = %d, want 3", got)
	}
	for _, dt := range []tensor.DType{tensor.Float16, tensor.BFloat16} {
		conv := tensor.Float32ToFloat16
		if dt == tensor.BFloat16 {
			conv = tensor.Float32ToBFloat16
		}
		b := []uint16{conv(1), conv(inf), conv(nan), conv(1)}
		s := []uint16{conv(2), conv(-inf), conv(nan), conv(2)}
		if got := NewNonFinite(tensor.Bytes(s), tensor.Bytes(b), dt); got != -1 {
			t.Errorf("%v: NewNonFinite = %d, want -1", dt, got)
		}
		s[3] = conv(nan)
		if got := NewNonFinite(tensor.Bytes(s), tensor.Bytes(b), dt); got != 3 {
			t.Errorf("%v: NewNonFinite = %d, want 3", dt, got)
		}
	}
}
