package synth

import (
	"bytes"
	"math"
	"regexp"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/tensor"
)

func manifest() (*export.Manifest, map[string][]byte) {
	w := make([]float32, 64*32)
	for i := range w {
		w[i] = float32(i%17) - 8
	}
	m := &export.Manifest{Fingerprint: "f00d", Tensors: []export.TensorEntry{
		{Name: "w", DType: tensor.Float32, Shape: []int64{64, 32}},
		{Name: "h", DType: tensor.Float16, Shape: []int64{8, 8}},
	}}
	h := make([]uint16, 64)
	for i := range h {
		h[i] = tensor.Float32ToFloat16(float32(i))
	}
	return m, map[string][]byte{"w": tensor.Bytes(w), "h": tensor.Bytes(h)}
}

func TestNewIsDeterministicAndDense(t *testing.T) {
	m, w := manifest()
	o := Options{Name: "a", Mask: MaskRandom, Density: 0.05, Scale: 0.1, Seed: 3, Semantics: adapter.Delta}
	a1, err := New(m, w, o)
	if err != nil {
		t.Fatal(err)
	}
	a2, _ := New(m, w, o)
	if a1.ModelFingerprint != "f00d" || len(a1.Tensors) != 2 {
		t.Fatalf("%+v", a1)
	}
	for i := range a1.Tensors {
		if !bytes.Equal(a1.Tensors[i].Values, a2.Tensors[i].Values) {
			t.Error("same seed, different values")
		}
	}
	if got := len(a1.Tensors[0].Indices); got != 102 { // round(0.05*2048)
		t.Errorf("nnz %d, want 102", got)
	}
	if a1.Tensors[1].ValueDType != tensor.Float16 {
		t.Error("fp16 weight should get fp16 values")
	}
}

func TestWeightMagnitudePicksLargest(t *testing.T) {
	m, w := manifest()
	a, err := New(m, w, Options{Mask: MaskWeightMagnitude, Density: 0.01, Scale: 0.1, Seed: 1, Semantics: adapter.Overwrite})
	if err != nil {
		t.Fatal(err)
	}
	base := tensor.Float32s(w["w"])
	vals := tensor.Float32s(a.Tensors[0].Values)
	if n := len(a.Tensors[0].Indices); n != len(base)/100 { // 1 % of 64x32, rounded down
		t.Fatalf("%d entries, want %d", n, len(base)/100)
	}
	for i, j := range a.Tensors[0].Indices {
		if b := base[j]; b != 8 && b != -8 {
			t.Errorf("index %d has |w| = %g, not the largest", j, b)
		}
		if d := vals[i] - base[j]; d > 1 || d < -1 {
			t.Errorf("overwrite value %g far from base %g", vals[i], base[j])
		}
	}
}

func TestBadOptions(t *testing.T) {
	m, w := manifest()
	for _, o := range []Options{
		{Mask: MaskRandom, Density: 0},
		{Mask: MaskRandom, Density: 1.5},
		{Mask: "snip", Density: 0.1},
	} {
		if _, err := New(m, w, o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}

// TestNonFiniteOptions: a NaN or infinite scale, density or alpha is
// refused with an error naming it, and so is a finite scale whose values
// do not fit the weight's dtype (1e6 in float16, 1e300 in float32).
func TestNonFiniteOptions(t *testing.T) {
	m, w := manifest()
	inf := math.Inf(1)
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Mask: MaskRandom, Density: 0.1, Scale: math.NaN()}, "scale NaN"},
		{Options{Mask: MaskRandom, Density: 0.1, Scale: inf}, "scale +Inf"},
		{Options{Mask: MaskRandom, Density: 0.1, Scale: -inf}, "scale -Inf"},
		{Options{Mask: MaskRandom, Density: math.NaN(), Scale: 0.1}, "density NaN"},
		{Options{Mask: MaskRandom, R: 1, Density: inf, Scale: 0.1}, "density +Inf"},
		{Options{Mask: MaskRandom, Density: 0.1, Scale: 0.1, Alpha: float32(math.NaN())}, "alpha NaN"},
		{Options{Mask: MaskRandom, Density: 0.1, Scale: 0.1, Alpha: float32(inf)}, "alpha +Inf"},
		{Options{Mask: MaskRandom, Density: 0.5, Scale: 1e6}, `"h"`},
		{Options{Mask: MaskRandom, Density: 0.5, Scale: 1e300, Targets: regexp.MustCompile("^w$")}, `"w"`},
	} {
		_, err := New(m, w, c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error about %s", c.o, err, c.want)
		}
	}
}
