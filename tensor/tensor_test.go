package tensor

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/x448/float16"
)

func TestBFloat16RoundsToNearestEven(t *testing.T) {
	for _, c := range []struct {
		in   uint32
		want uint16
	}{
		{0x3f800000, 0x3f80}, // 1.0 exact
		{0x3f808000, 0x3f80}, // halfway, even stays
		{0x3f818000, 0x3f82}, // halfway, odd rounds up
		{0x3f80c000, 0x3f81}, // above halfway
		{0x7f7fffff, 0x7f80}, // max float rounds to +inf
		{0x80000000, 0x8000}, // -0
	} {
		if got := Float32ToBFloat16(math.Float32frombits(c.in)); got != c.want {
			t.Errorf("Float32ToBFloat16(%#x) = %#x, want %#x", c.in, got, c.want)
		}
	}
	if h := Float32ToBFloat16(float32(math.NaN())); h&0x7f80 != 0x7f80 || h&0x7f == 0 {
		t.Errorf("NaN became %#x", h)
	}
	for h := 0; h < 1<<16; h++ {
		f := BFloat16ToFloat32(uint16(h))
		if f == f && Float32ToBFloat16(f) != uint16(h) {
			t.Fatalf("bf16 %#x does not round-trip", h)
		}
	}
}

func TestNumElements(t *testing.T) {
	if n, err := NumElements([]int64{2, 3, 4}); n != 24 || err != nil {
		t.Errorf("got %d, %v", n, err)
	}
	if n, err := NumElements(nil); n != 1 || err != nil {
		t.Errorf("scalar: got %d, %v", n, err)
	}
	for _, bad := range [][]int64{{-1, 2}, {1 << 40, 1 << 40}} {
		if _, err := NumElements(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestNewChecksLength(t *testing.T) {
	if _, err := New(Float32, []int64{2, 2}, make([]byte, 15)); err == nil {
		t.Error("short data accepted")
	}
	if _, err := New(String, []int64{1}, nil); err == nil {
		t.Error("string tensor accepted")
	}
}

func TestDTypeText(t *testing.T) {
	b, err := json.Marshal(struct{ D DType }{Float16})
	if err != nil || string(b) != `{"D":"float16"}` {
		t.Fatalf("%s %v", b, err)
	}
	var v struct{ D DType }
	if err := json.Unmarshal([]byte(`{"D":"bf16"}`), &v); err != nil || v.D != BFloat16 {
		t.Fatalf("%v %v", v.D, err)
	}
	if _, err := ParseDType("complex64"); err == nil {
		t.Error("unknown dtype accepted")
	}
}

func TestAsFloat32(t *testing.T) {
	h := []uint16{Float32ToFloat16(1.5), Float32ToFloat16(-2)}
	x, _ := New(Float16, []int64{2}, Bytes(h))
	f, err := x.AsFloat32()
	if err != nil || f[0] != 1.5 || f[1] != -2 {
		t.Fatalf("%v %v", f, err)
	}
}

// f16Checker compares Float32ToFloat16 and Float32sToFloat16 with
// x448/float16. Inputs are queued and checked a batch at a time, so the
// batch function sees blocks of varied contents, as in the patch kernels.
type f16Checker struct {
	t   *testing.T
	in  []float32
	out []uint16
}

func newF16Checker(t *testing.T) *f16Checker {
	return &f16Checker{t: t, in: make([]float32, 0, 4096), out: make([]uint16, 4096)}
}

// add queues the float32 with bits u; it reports false once a mismatch
// was found.
func (c *f16Checker) add(u uint32) bool {
	c.in = append(c.in, math.Float32frombits(u))
	if len(c.in) < cap(c.in) {
		return true
	}
	return c.flush()
}

// flush checks the queued inputs.
func (c *f16Checker) flush() bool {
	in := c.in
	c.in = c.in[:0]
	out := c.out[:len(in)]
	for i := range out {
		out[i] = 0xdead // the batch must overwrite every element
	}
	Float32sToFloat16(out, in)
	for i, f := range in {
		want := float16.Fromfloat32(f).Bits()
		if got := Float32ToFloat16(f); got != want {
			c.t.Errorf("Float32ToFloat16(%#08x) = %#04x, want %#04x", math.Float32bits(f), got, want)
			return false
		}
		if out[i] != want {
			c.t.Errorf("Float32sToFloat16: element %d (%#08x) = %#04x, want %#04x", i, math.Float32bits(f), out[i], want)
			return false
		}
	}
	return true
}

// TestFloat32ToFloat16 checks the converters' own normal-range path
// (Float32ToFloat16 and the batch Float32sToFloat16) against x448/float16
// around every float16 value (the value, its midpoints and neighbours)
// and on random bits, and Float16Table against Float16ToFloat32. Set
// SHIRA_EXHAUSTIVE=1 to check all 2^32 inputs (a few minutes).
func TestFloat32ToFloat16(t *testing.T) {
	c := newF16Checker(t)
	if os.Getenv("SHIRA_EXHAUSTIVE") != "" {
		for u := uint64(0); u < 1<<32; u++ {
			if !c.add(uint32(u)) {
				return
			}
		}
		c.flush()
		return
	}
	n := 0
	for h := range 1 << 16 {
		u := math.Float32bits(Float16ToFloat32(uint16(h)))
		for _, d := range []int32{-1 << 13, -1<<12 - 1, -1 << 12, -1<<12 + 1, -1, 0, 1, 1<<12 - 1, 1 << 12, 1<<12 + 1} {
			if !c.add(uint32(int32(u) + d)) {
				return
			}
			n++
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1<<20 + 7 { // not a multiple of the batch: the last flush is short
		if !c.add(rng.Uint32()) {
			return
		}
		n++
	}
	if !c.flush() {
		return
	}
	if want := 10<<16 + 1<<20 + 7; n != want {
		t.Fatalf("checked %d inputs, want %d", n, want)
	}
	for i := range 1 << 16 {
		if got, want := math.Float32bits(Float16Table()[i]), math.Float32bits(Float16ToFloat32(uint16(i))); got != want {
			t.Fatalf("Float16Table()[%#04x] = %#08x, want %#08x", i, got, want)
		}
	}
}

func TestFloat32sToFloat16Lengths(t *testing.T) {
	dst := []uint16{1, 2, 3}
	Float32sToFloat16(dst, []float32{0.5})
	if dst[0] != 0x3800 || dst[1] != 2 || dst[2] != 3 {
		t.Fatalf("dst = %#04x: want only the first element written", dst)
	}
	Float32sToFloat16(nil, nil)
	defer func() {
		if recover() == nil {
			t.Fatal("a dst shorter than src did not panic")
		}
	}()
	Float32sToFloat16(dst[:1], []float32{1, 2})
}

// BenchmarkFloat32sToFloat16 narrows a block of the patch kernels' size
// (normal values, as weights are) in one call, and one element at a time
// through Float32ToFloat16.
func BenchmarkFloat32sToFloat16(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	src := make([]float32, 1024)
	for i := range src {
		src[i] = float32(rng.NormFloat64())
	}
	dst := make([]uint16, len(src))
	b.Run("batch", func(b *testing.B) {
		b.SetBytes(int64(len(src) * 4))
		for b.Loop() {
			Float32sToFloat16(dst, src)
		}
	})
	b.Run("per-element", func(b *testing.B) {
		b.SetBytes(int64(len(src) * 4))
		for b.Loop() {
			for i, f := range src {
				dst[i] = Float32ToFloat16(f)
			}
		}
	})
}
