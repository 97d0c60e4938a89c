package quant

import (
	"math"
	"testing"

	"github.com/shira-ort/shira-ort/tensor"
)

// TestStochasticRounding: RoundStochastic is unbiased (the mean code over
// many elements is the mean value, to sampling error), never more than a
// step from the value, exact on integers, and the same on every call;
// nearest is RoundToEven.
func TestStochasticRounding(t *testing.T) {
	const n = 1 << 16
	for _, frac := range []float64{0.05, 0.25, 0.5, 0.9} {
		var sum float64
		for i := range uint32(n) {
			x := 3 + frac
			r := RoundStochastic.Round(i, x)
			if r != 3 && r != 4 {
				t.Fatalf("frac %v: element %d rounds to %v", frac, i, r)
			}
			if RoundStochastic.Round(i, x) != r {
				t.Fatal("not deterministic")
			}
			sum += r - 3
		}
		// binomial: standard error sqrt(f(1−f)/n) < 0.002
		if got := sum / n; math.Abs(got-frac) > 0.01 {
			t.Errorf("frac %v: mean rounded fraction %v", frac, got)
		}
	}
	for i := range uint32(1000) {
		if RoundStochastic.Round(i, -7) != -7 || RoundStochastic.Round(i, 12) != 12 {
			t.Fatal("an integer does not round to itself")
		}
		if d := Dither(i); d < 0 || d >= 1 {
			t.Fatalf("Dither(%d) = %v", i, d)
		}
	}
	if RoundNearestEven.Round(5, 2.5) != 2 || RoundNearestEven.Round(5, -1.5) != -2 {
		t.Fatal("nearest is not round half to even")
	}
	for _, s := range []string{"nearest", "stochastic"} {
		r, err := ParseRounding(s)
		if err != nil || r.String() != s {
			t.Fatalf("ParseRounding(%q) = %v, %v", s, r, err)
		}
	}
	if _, err := ParseRounding("up"); err == nil {
		t.Fatal("ParseRounding accepted an unknown rounding")
	}
	sc, err := NewQDQ(tensor.Int8, []int64{4}, 0, []float32{1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sc.Rounding = 9
	if sc.Validate() == nil {
		t.Fatal("Validate accepted an unknown rounding")
	}
}
