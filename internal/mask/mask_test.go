package mask

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	"github.com/shira-ort/shira-ort/tensor"
)

func TestCount(t *testing.T) {
	for _, c := range []struct {
		numel   int
		density float64
		want    int
	}{
		{1000, 0.01, 10}, {1000, 0.0104, 10}, {1000, 0.0105, 11}, {1000, 0, 1}, {1000, 1e-9, 1},
		{1000, 2, 1000}, {1000, math.NaN(), 1}, {0, 0.5, 0}, {7, -1, 1}, {16777216, 0.01, 167772},
	} {
		if got := Count(c.numel, c.density); got != c.want {
			t.Errorf("Count(%d, %v) = %d, want %d", c.numel, c.density, got, c.want)
		}
	}
}

func checkSorted(t *testing.T, ix []uint32, numel, k int) {
	t.Helper()
	if len(ix) != k {
		t.Fatalf("got %d indices, want %d", len(ix), k)
	}
	for i, v := range ix {
		if int(v) >= numel || (i > 0 && v <= ix[i-1]) {
			t.Fatalf("bad index %d at %d", v, i)
		}
	}
}

func TestRandom(t *testing.T) {
	for _, c := range []struct{ numel, k int }{
		{10, 0}, {10, 10}, {10, 3}, {10, 7}, {1000, 10}, {1 << 20, 3}, {1 << 20, 10486}, {1 << 20, 900000}, {100003, 50001},
	} {
		a, err := Random(c.numel, c.k, rand.New(rand.NewPCG(1, 2)))
		if err != nil {
			t.Fatal(err)
		}
		checkSorted(t, a, c.numel, c.k)
		b, _ := Random(c.numel, c.k, rand.New(rand.NewPCG(1, 2)))
		if !slices.Equal(a, b) {
			t.Fatalf("Random(%d, %d) not deterministic", c.numel, c.k)
		}
	}
	for _, c := range []struct{ numel, k int }{{10, 11}, {10, -1}, {-1, 0}, {MaxElements + 1, 1}} {
		if _, err := Random(c.numel, c.k, rand.New(rand.NewPCG(1, 2))); err == nil {
			t.Errorf("Random(%d, %d) accepted", c.numel, c.k)
		}
	}
}

// TestRandomUniform checks every position is picked about equally often on
// both code paths (bitmap, sorted draws) and the complement path.
func TestRandomUniform(t *testing.T) {
	for _, c := range []struct{ numel, k int }{{64, 5}, {64, 50}, {20000, 3}} {
		rng := rand.New(rand.NewPCG(3, 4))
		const trials = 20000
		hits := make([]int, c.numel)
		for range trials {
			ix, _ := Random(c.numel, c.k, rng)
			for _, v := range ix {
				hits[v]++
			}
		}
		if c.numel > 1000 { // fold for a sparse case
			folded := make([]int, 64)
			for i, h := range hits {
				folded[i%64] += h
			}
			hits = folded
		}
		exp := float64(trials*c.k) / float64(len(hits))
		if c.numel > 1000 {
			exp = float64(trials*c.k) / 64
		}
		chi := 0.0
		for _, h := range hits {
			chi += (float64(h) - exp) * (float64(h) - exp) / exp
		}
		// 63 degrees of freedom: p=1e-4 at ~ 115 (looser for without-replacement correlation)
		if chi > 130 {
			t.Errorf("numel %d k %d: chi2 %.1f, not uniform", c.numel, c.k, chi)
		}
	}
}

func refTopK(mag []float64, k int) []uint32 {
	idx := make([]int, len(mag))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return mag[idx[a]] > mag[idx[b]] })
	out := make([]uint32, k)
	for i := range out {
		out[i] = uint32(idx[i])
	}
	slices.Sort(out)
	return out
}

func TestWeightMagnitude(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, dt := range []tensor.DType{tensor.Float32, tensor.Float16, tensor.BFloat16} {
		for _, n := range []int{1, 7, 1000, 70000} {
			vals := make([]float32, n)
			for i := range vals {
				switch rng.IntN(10) {
				case 0:
					vals[i] = float32(math.NaN())
				case 1:
					vals[i] = 0.5 // ties
				case 2:
					vals[i] = -0.5
				case 3:
					vals[i] = float32(math.Copysign(0, -1))
				case 4:
					vals[i] = float32(math.Inf(-1))
				case 5:
					vals[i] = 1e-42 // subnormal (0 in 16-bit types)
				default:
					vals[i] = float32(rng.NormFloat64())
				}
			}
			w, _ := tensor.FromFloat32([]int64{int64(n)}, vals)
			if dt != tensor.Float32 {
				h := make([]uint16, n)
				for i, v := range vals {
					if dt == tensor.Float16 {
						h[i] = tensor.Float32ToFloat16(v)
					} else {
						h[i] = tensor.Float32ToBFloat16(v)
					}
				}
				w, _ = tensor.New(dt, []int64{int64(n)}, tensor.Bytes(h))
			}
			wide, _ := w.AsFloat32()
			mag := make([]float64, n)
			for i, v := range wide {
				if !math.IsNaN(float64(v)) {
					mag[i] = math.Abs(float64(v))
				}
			}
			for _, k := range []int{0, 1, n / 3, n / 2, n} {
				got, err := WeightMagnitude(w, k)
				if err != nil {
					t.Fatal(err)
				}
				if want := refTopK(mag, k); !slices.Equal(got, want) {
					t.Fatalf("%v n=%d k=%d: got %v..., want %v...", dt, n, k, got[:min(5, k)], want[:min(5, k)])
				}
			}
		}
	}
	bad, _ := tensor.FromInt64([]int64{3}, []int64{1, 2, 3})
	if _, err := WeightMagnitude(bad, 1); err == nil {
		t.Fatal("int64 accepted")
	}
}

func TestStruct(t *testing.T) {
	for _, c := range []struct{ rows, cols, stride int }{{1, 1, 1}, {5, 7, 2}, {7, 5, 3}, {16, 16, 4}, {9, 9, 1}, {3, 10, 20}} {
		got, err := Struct(c.rows, c.cols, c.stride)
		if err != nil {
			t.Fatal(err)
		}
		var want []uint32
		for r := range c.rows {
			for col := range c.cols {
				if r%c.stride == 0 || col%c.stride == 0 || r == col {
					want = append(want, uint32(r*c.cols+col))
				}
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("Struct%v = %v, want %v", c, got, want)
		}
	}
	if _, err := Struct(3, 3, 0); err == nil {
		t.Fatal("stride 0 accepted")
	}
}

func BenchmarkRandom16M1pct(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	for b.Loop() {
		Random(4096*4096, Count(4096*4096, 0.01), rng)
	}
}

func BenchmarkRandom100M1pct(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	for b.Loop() {
		Random(100_000_000, 1_000_000, rng)
	}
}

func BenchmarkWeightMagnitude16M(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	vals := make([]float32, 4096*4096)
	for i := range vals {
		vals[i] = float32(rng.NormFloat64())
	}
	w, _ := tensor.FromFloat32([]int64{4096, 4096}, vals)
	for b.Loop() {
		WeightMagnitude(w, Count(len(vals), 0.01))
	}
}
