package quant

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/tensor"
)

func mustQDQ(t testing.TB, dt tensor.DType, shape []int64, axis int, scales []float32, zp []byte) *Scheme {
	t.Helper()
	s, err := NewQDQ(dt, shape, axis, scales, zp)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// zpBytes encodes zero points as raw little-endian codes of dt.
func zpBytes(dt tensor.DType, zp ...int32) []byte {
	var b []byte
	for _, z := range zp {
		b = append(b, byte(z))
		if dt.Size() == 2 {
			b = append(b, byte(z>>8))
		}
	}
	return b
}

func TestRoundHalfToEven(t *testing.T) {
	s := mustQDQ(t, tensor.Int8, []int64{1}, 1, []float32{1}, nil)
	for _, c := range []struct {
		v    float32
		want int32
	}{
		{2.5, 2}, {3.5, 4}, {-2.5, -2}, {-3.5, -4}, {0.5, 0}, {-0.5, 0}, {1.5, 2},
		{2.4999998, 2}, {2.5000002, 3}, {-126.5, -126}, {126.5, 126}, {125.5, 126},
	} {
		if q, cl := s.Quantize(0, c.v); q != c.want || cl {
			t.Errorf("Quantize(%v) = %d, %v; want %d, false", c.v, q, cl, c.want)
		}
	}
	// v/scale is computed in float32 first: 1.25/0.5 = 2.5 -> 2, 1.75/0.5 = 3.5 -> 4.
	s = mustQDQ(t, tensor.Int8, []int64{1}, 1, []float32{0.5}, nil)
	if q, _ := s.Quantize(0, 1.25); q != 2 {
		t.Errorf("Quantize(1.25 / 0.5) = %d, want 2", q)
	}
	if q, _ := s.Quantize(0, 1.75); q != 4 {
		t.Errorf("Quantize(1.75 / 0.5) = %d, want 4", q)
	}
	// The zero point is added AFTER rounding: round(2.5) + 11 = 13, while
	// round(2.5 + 11) would be 14.
	s = mustQDQ(t, tensor.Uint8, []int64{1}, 1, []float32{1}, zpBytes(tensor.Uint8, 11))
	if q, _ := s.Quantize(0, 2.5); q != 13 {
		t.Errorf("uint8 zp 11: Quantize(2.5) = %d, want 13", q)
	}
	if q, _ := s.Quantize(0, -3.5); q != 7 {
		t.Errorf("uint8 zp 11: Quantize(-3.5) = %d, want 7", q)
	}
}

func TestSaturationEveryType(t *testing.T) {
	for _, c := range []struct {
		dt     tensor.DType
		lo, hi int32
	}{
		{tensor.Int8, -128, 127}, {tensor.Uint8, 0, 255}, {tensor.Int16, -32768, 32767}, {tensor.Uint16, 0, 65535},
	} {
		s := mustQDQ(t, c.dt, []int64{2}, 0, []float32{1}, nil)
		if lo, hi := s.CodeRange(); lo != c.lo || hi != c.hi {
			t.Errorf("%v: CodeRange = %d, %d", c.dt, lo, hi)
		}
		hi, lo := float32(c.hi), float32(c.lo)
		for _, k := range []struct {
			v       float32
			q       int32
			clipped bool
		}{
			{hi, c.hi, false},
			{hi + 0.25, c.hi, false}, // rounds back into range
			{hi + 0.5, c.hi, true},   // hi is odd: hi+0.5 rounds to the even hi+1
			{hi + 1, c.hi, true},
			{1e30, c.hi, true},
			{float32(math.Inf(1)), c.hi, true},
			{lo, c.lo, false},
			{lo - 0.5, c.lo, false}, // -128.5, -32768.5 round to the even bound; -0.5 to -0 = 0
			{lo - 0.75, c.lo, true},
			{lo - 1, c.lo, true},
			{-1e30, c.lo, true},
			{float32(math.Inf(-1)), c.lo, true},
			{float32(math.NaN()), c.lo, true},
		} {
			q, cl := s.Quantize(1, k.v)
			if q != k.q || cl != k.clipped {
				t.Errorf("%v: Quantize(%v) = %d, %v; want %d, %v", c.dt, k.v, q, cl, k.q, k.clipped)
			}
		}
	}
	// with a zero point, saturation applies to round(v/s) + zp
	s := mustQDQ(t, tensor.Uint8, []int64{1}, 1, []float32{1}, zpBytes(tensor.Uint8, 200))
	for _, k := range []struct {
		v       float32
		q       int32
		clipped bool
	}{{55, 255, false}, {56, 255, true}, {-200, 0, false}, {-201, 0, true}} {
		if q, cl := s.Quantize(0, k.v); q != k.q || cl != k.clipped {
			t.Errorf("uint8 zp 200: Quantize(%v) = %d, %v; want %d, %v", k.v, q, cl, k.q, k.clipped)
		}
	}
	s = mustQDQ(t, tensor.Int16, []int64{1}, 1, []float32{0.5}, zpBytes(tensor.Int16, -30000))
	if q, cl := s.Quantize(0, -1500); q != -32768 || !cl {
		t.Errorf("int16 zp -30000: Quantize(-1500) = %d, %v", q, cl)
	}
	if q, cl := s.Quantize(0, 1500); q != -27000 || cl {
		t.Errorf("int16 zp -30000: Quantize(1500) = %d, %v", q, cl)
	}
}

func TestZeroPointsDequantize(t *testing.T) {
	s := mustQDQ(t, tensor.Uint8, []int64{2}, 0, []float32{0.1}, zpBytes(tensor.Uint8, 128))
	if got, want := s.Dequantize(0, 130), float32(2)*float32(0.1); got != want {
		t.Errorf("Dequantize(130) = %v, want %v", got, want)
	}
	if got := s.Dequantize(1, 128); got != 0 {
		t.Errorf("Dequantize(zp) = %v", got)
	}
	s = mustQDQ(t, tensor.Uint16, []int64{1}, 1, []float32{0.25}, zpBytes(tensor.Uint16, 40000))
	if got := s.Dequantize(0, 0); got != -10000 {
		t.Errorf("uint16 zp 40000: Dequantize(0) = %v", got)
	}
	if q, _ := s.Quantize(0, -10000); q != 0 {
		t.Errorf("uint16 zp 40000: Quantize(-10000) = %d", q)
	}
	s = mustQDQ(t, tensor.Int16, []int64{1}, 1, []float32{2}, zpBytes(tensor.Int16, -300))
	if got := s.Dequantize(0, 32767); got != float32(33067*2) {
		t.Errorf("int16 zp -300: Dequantize(32767) = %v", got)
	}
	// the code storage round trips through Code / SetCode, little-endian
	raw := []byte{0x34, 0x12}
	if q := s.Code(raw, 0); q != 0x1234 {
		t.Errorf("Code = %#x", q)
	}
	s.SetCode(raw, 0, -2)
	if raw[0] != 0xfe || raw[1] != 0xff {
		t.Errorf("SetCode(-2) wrote % x", raw)
	}
}

func roundTripScales() []float32 {
	return []float32{1, 0.1, 0.0037, 1e-3, 3.7, 1e-7, -0.02, 12345.678}
}

func TestRoundTripExhaustive8Bit(t *testing.T) {
	for _, dt := range []tensor.DType{tensor.Int8, tensor.Uint8} {
		lo, hi := int32(-128), int32(127)
		zps := []int32{0, -128, 127, -3, 17}
		if dt == tensor.Uint8 {
			lo, hi, zps = 0, 255, []int32{0, 128, 255, 3, 201}
		}
		for _, sc := range roundTripScales() {
			for _, zp := range zps {
				s := mustQDQ(t, dt, []int64{1}, 1, []float32{sc}, zpBytes(dt, zp))
				for q := lo; q <= hi; q++ {
					x := s.Dequantize(0, q)
					if back, cl := s.Quantize(0, x); back != q || cl {
						t.Fatalf("%v scale %v zp %d: code %d -> %v -> %d (clipped %v)", dt, sc, zp, q, x, back, cl)
					}
				}
			}
		}
	}
}

func TestRoundTripSample16Bit(t *testing.T) {
	for _, dt := range []tensor.DType{tensor.Int16, tensor.Uint16} {
		lo, hi := int32(-32768), int32(32767)
		zps := []int32{0, -32768, 32767, 1234}
		if dt == tensor.Uint16 {
			lo, hi, zps = 0, 65535, []int32{0, 32768, 65535, 777}
		}
		for _, sc := range roundTripScales() {
			for _, zp := range zps {
				s := mustQDQ(t, dt, []int64{1}, 1, []float32{sc}, zpBytes(dt, zp))
				check := func(q int32) {
					x := s.Dequantize(0, q)
					if back, cl := s.Quantize(0, x); back != q || cl {
						t.Fatalf("%v scale %v zp %d: code %d -> %v -> %d (clipped %v)", dt, sc, zp, q, x, back, cl)
					}
				}
				for q := lo; q <= hi; q += 97 {
					check(q)
				}
				for q := int32(-5); q <= 5; q++ {
					check(min(max(zp+q, lo), hi))
				}
				check(lo)
				check(hi)
			}
		}
	}
}

// refQDQParam mirrors ORT's DequantizeLinearApply loops
// (process_block_count × broadcast_dim × process_block_size) to find the
// scale index of every flat element, independently of Scheme.loc.
func refQDQParam(shape []int64, axis int) []int {
	if axis < 0 {
		axis += len(shape)
	}
	outer, inner := 1, 1
	for _, d := range shape[:axis] {
		outer *= int(d)
	}
	for _, d := range shape[axis+1:] {
		inner *= int(d)
	}
	var out []int
	for n := 0; n < outer; n++ {
		for bd := 0; bd < int(shape[axis]); bd++ {
			for bs := 0; bs < inner; bs++ {
				out = append(out, bd)
			}
		}
	}
	return out
}

func TestPerAxisChannelMapping(t *testing.T) {
	for _, c := range []struct {
		name  string
		shape []int64
		axis  int
		norm  int
	}{
		{"rank2 axis0", []int64{3, 4}, 0, 0},
		{"rank2 axis1", []int64{3, 4}, 1, 1},
		{"rank2 axis-1", []int64{3, 4}, -1, 1},
		{"rank2 axis-2", []int64{3, 4}, -2, 0},
		{"conv OIHW axis0", []int64{8, 3, 3, 3}, 0, 0},
		{"conv OIHW axis1", []int64{8, 3, 3, 3}, 1, 1},
		{"rank4 axis-4", []int64{8, 3, 3, 3}, -4, 0},
		{"rank3 axis2", []int64{2, 3, 5}, 2, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			nch := c.shape[c.norm]
			scales := make([]float32, nch)
			zp := make([]int32, nch)
			for j := range scales {
				scales[j] = float32(j+1) * 0.125
				zp[j] = int32(j) - 2
			}
			s := mustQDQ(t, tensor.Int8, c.shape, c.axis, scales, zpBytes(tensor.Int8, zp...))
			if s.NormalizedAxis() != c.norm {
				t.Fatalf("NormalizedAxis = %d, want %d", s.NormalizedAxis(), c.norm)
			}
			ref := refQDQParam(c.shape, c.axis)
			if len(ref) != s.NumElements() {
				t.Fatalf("NumElements = %d, want %d", s.NumElements(), len(ref))
			}
			for i, p := range ref {
				if got := s.Param(i); got != p {
					t.Fatalf("Param(%d) = %d, want %d", i, got, p)
				}
				// Dequantize uses that channel's scale and zero point
				if got, want := s.Dequantize(i, 5), float32(5-zp[p])*scales[p]; got != want {
					t.Fatalf("Dequantize(%d, 5) = %v, want %v", i, got, want)
				}
			}
		})
	}
	// hand check: rank-2 [3,4] axis 0 element (2,1) = flat 9 -> channel 2;
	// axis 1 -> channel 1
	a0 := mustQDQ(t, tensor.Uint8, []int64{3, 4}, 0, []float32{1, 2, 3}, nil)
	a1 := mustQDQ(t, tensor.Uint8, []int64{3, 4}, 1, []float32{1, 2, 3, 4}, nil)
	if a0.Param(9) != 2 || a1.Param(9) != 1 {
		t.Errorf("flat 9: axis0 channel %d, axis1 channel %d", a0.Param(9), a1.Param(9))
	}
	// Conv weight [O=8, I=3, 3, 3] axis 0: element (5, 2, 1, 0) -> channel 5
	cv := mustQDQ(t, tensor.Int8, []int64{8, 3, 3, 3}, 0, []float32{1, 2, 3, 4, 5, 6, 7, 8}, nil)
	if p := cv.Param(5*27 + 2*9 + 1*3 + 0); p != 5 {
		t.Errorf("conv channel %d, want 5", p)
	}
	// per tensor: one scale, the axis is ignored (even out of range)
	pt := mustQDQ(t, tensor.Int8, []int64{3, 4}, 7, []float32{0.5}, nil)
	if pt.Param(11) != 0 || pt.NormalizedAxis() != -1 {
		t.Errorf("per tensor: Param %d axis %d", pt.Param(11), pt.NormalizedAxis())
	}
}

func TestValidateErrors(t *testing.T) {
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	for _, c := range []struct {
		name string
		mk   func() (*Scheme, error)
		want string
	}{
		{"float code type", func() (*Scheme, error) { return NewQDQ(tensor.Float32, []int64{4}, 0, []float32{1}, nil) }, "code type"},
		{"int32 code type", func() (*Scheme, error) { return NewQDQ(tensor.Int32, []int64{4}, 0, []float32{1}, nil) }, "code type"},
		{"no scales", func() (*Scheme, error) { return NewQDQ(tensor.Int8, []int64{4}, 0, nil, nil) }, "no scales"},
		{"axis too big", func() (*Scheme, error) { return NewQDQ(tensor.Int8, []int64{2, 3}, 2, []float32{1, 1, 1}, nil) }, "axis"},
		{"axis too negative", func() (*Scheme, error) { return NewQDQ(tensor.Int8, []int64{2, 3}, -3, []float32{1, 1}, nil) }, "axis"},
		{"scales vs axis dim", func() (*Scheme, error) { return NewQDQ(tensor.Int8, []int64{2, 3}, 1, []float32{1, 1}, nil) }, "scales for per-axis"},
		{"negative dim", func() (*Scheme, error) { return NewQDQ(tensor.Int8, []int64{-2}, 0, []float32{1}, nil) }, "negative"},
		{"zero scale", func() (*Scheme, error) { return NewQDQ(tensor.Int8, []int64{2}, 0, []float32{1, 0}, nil) }, "scale[1] = 0"},
		{"NaN scale", func() (*Scheme, error) { return NewQDQ(tensor.Int8, []int64{2}, 0, []float32{nan, 1}, nil) }, "scale[0] = NaN"},
		{"Inf scale", func() (*Scheme, error) { return NewQDQ(tensor.Int8, []int64{1}, 0, []float32{inf}, nil) }, "scale[0] = +Inf"},
		{"zp bytes", func() (*Scheme, error) { return NewQDQ(tensor.Int16, []int64{2}, 0, []float32{1, 1}, []byte{1, 2}) }, "zero-point bytes"},
		{"zp range", func() (*Scheme, error) {
			s := &Scheme{Kind: KindQDQ, CodeType: tensor.Int8, Shape: []int64{2}, Scales: []float32{1}, ZeroPoints: []int32{128}}
			return s, s.Validate()
		}, "zero point[0] = 128"},
		{"zp count", func() (*Scheme, error) {
			s := &Scheme{Kind: KindQDQ, CodeType: tensor.Int8, Shape: []int64{2}, Scales: []float32{1}, ZeroPoints: []int32{1, 2}}
			return s, s.Validate()
		}, "2 zero points for 1 scales"},
		{"float zp on qdq", func() (*Scheme, error) {
			s := &Scheme{Kind: KindQDQ, CodeType: tensor.Int8, Shape: []int64{2}, Scales: []float32{1}, FloatZeroPoints: []float32{1}}
			return s, s.Validate()
		}, "MatMulNBits only"},
		{"both zp", func() (*Scheme, error) {
			s := &Scheme{Kind: KindNBits, Bits: 4, BlockSize: 16, Shape: []int64{16, 1}, Scales: []float32{1}, ZeroPoints: []int32{1}, FloatZeroPoints: []float32{1}}
			return s, s.Validate()
		}, "both"},
		{"unknown kind", func() (*Scheme, error) { s := &Scheme{}; return s, s.Validate() }, "unknown kind"},
		{"bits 3", func() (*Scheme, error) { return NewNBits(32, 2, 3, 32, make([]float32, 2), nil) }, "bits 3"},
		{"block 24", func() (*Scheme, error) { return NewNBits(48, 2, 4, 24, []float32{1, 1, 1, 1}, nil) }, "block_size 24"},
		{"block 8", func() (*Scheme, error) { return NewNBits(48, 2, 4, 8, ones(12), nil) }, "block_size 8"},
		{"K zero", func() (*Scheme, error) { return NewNBits(0, 2, 4, 16, nil, nil) }, "positive"},
		{"nbits scales", func() (*Scheme, error) { return NewNBits(33, 2, 4, 32, ones(2), nil) }, "2 scales for N=2 × k_blocks=2"},
		{"nbits zp bytes", func() (*Scheme, error) { return NewNBits(80, 3, 4, 16, ones(15), make([]byte, 8)) }, "want N·ceil(k_blocks·bits/8) = 9"},
		{"nbits float zp count", func() (*Scheme, error) { return NewNBitsFloatZP(32, 2, 4, 32, ones(2), ones(3)) }, "3 float zero points"},
		{"nbits float zp NaN", func() (*Scheme, error) { return NewNBitsFloatZP(32, 2, 4, 32, ones(2), []float32{1, nan}) }, "float zero point[1]"},
		{"nbits zero scale", func() (*Scheme, error) { return NewNBits(32, 2, 4, 32, []float32{1, 0}, nil) }, "scale[1] = 0"},
		{"nbits zp range", func() (*Scheme, error) {
			s := &Scheme{Kind: KindNBits, Bits: 2, BlockSize: 16, Shape: []int64{16, 1}, Scales: []float32{1}, ZeroPoints: []int32{4}}
			return s, s.Validate()
		}, "zero point[0] = 4 outside [0, 3]"},
		{"nbits rank", func() (*Scheme, error) {
			s := &Scheme{Kind: KindNBits, Bits: 4, BlockSize: 16, Shape: []int64{16}, Scales: []float32{1}}
			return s, s.Validate()
		}, "[K, N]"},
	} {
		_, err := c.mk()
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want ErrInvalid containing %q", c.name, err, c.want)
		}
	}
	// negative scales are accepted (ORT's symmetric quantizer makes them)
	s := mustQDQ(t, tensor.Int8, []int64{1}, 0, []float32{-0.5}, nil)
	if q, _ := s.Quantize(0, 1.0); q != -2 || s.Dequantize(0, -2) != 1 {
		t.Errorf("negative scale: Quantize(1) = %d", q)
	}
	// a Scheme that was never validated panics in the element methods
	defer func() {
		if recover() == nil {
			t.Error("no panic for an unvalidated Scheme")
		}
	}()
	(&Scheme{Kind: KindQDQ}).Code([]byte{0}, 0)
}

func ones(n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = 1
	}
	return s
}

func TestRawLenAndByteRange(t *testing.T) {
	s := mustQDQ(t, tensor.Uint16, []int64{3, 5}, 1, []float32{1, 1, 1, 1, 1}, nil)
	if s.RawLen() != 30 {
		t.Errorf("RawLen = %d", s.RawLen())
	}
	if off, n := s.ByteRange(7); off != 14 || n != 2 {
		t.Errorf("ByteRange(7) = %d, %d", off, n)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("SetCode out of range did not panic")
			}
		}()
		s.SetCode(make([]byte, 30), 0, 65536)
	}()
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Code(15) did not panic")
			}
		}()
		s.Code(make([]byte, 30), 15)
	}()
}
