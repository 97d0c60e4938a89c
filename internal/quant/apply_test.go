package quant

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/shira-ort/shira-ort/tensor"
)

// randIdx returns m distinct sorted indices below n.
func randIdx(r *rand.Rand, n, m int) []uint32 {
	seen := make(map[uint32]bool, m)
	out := make([]uint32, 0, m)
	for len(out) < m {
		i := uint32(r.IntN(n))
		if !seen[i] {
			seen[i] = true
			out = append(out, i)
		}
	}
	slices.Sort(out)
	return out
}

func testSchemes(t testing.TB, r *rand.Rand) map[string]*Scheme {
	zp8 := make([]int32, 6)
	for i := range zp8 {
		zp8[i] = r.Int32N(256) - 128
	}
	zpu16 := make([]int32, 5)
	for i := range zpu16 {
		zpu16[i] = r.Int32N(65536)
	}
	nbZP := make([]int32, 7*3)
	for i := range nbZP {
		nbZP[i] = r.Int32N(16)
	}
	packed, err := PackNBitsZeroPoints(nbZP, 7, 3, 4)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*Scheme{
		"int8 per-axis":    mustQDQ(t, tensor.Int8, []int64{6, 10}, 0, randScales(r, 6), zpBytes(tensor.Int8, zp8...)),
		"uint8 per-tensor": mustQDQ(t, tensor.Uint8, []int64{4, 3, 3, 3}, 1, []float32{0.02}, zpBytes(tensor.Uint8, 128)),
		"int16 per-axis":   mustQDQ(t, tensor.Int16, []int64{3, 4, 5}, -1, randScales(r, 5), nil),
		"uint16 per-axis":  mustQDQ(t, tensor.Uint16, []int64{4, 5}, 1, randScales(r, 5), zpBytes(tensor.Uint16, zpu16...)),
		"nbits4 odd K zp":  mustNBits(t, 40, 7, 4, 16, randScales(r, 7*3), packed),
		"nbits4 no zp":     mustNBits(t, 64, 5, 4, 32, randScales(r, 10), nil),
		"nbits2":           mustNBits(t, 48, 3, 2, 16, randScales(r, 9), nil),
		"nbits8":           mustNBits(t, 40, 3, 8, 32, randScales(r, 6), nil),
	}
	fz := make([]float32, 6)
	for i := range fz {
		fz[i] = 7.5 + r.Float32()
	}
	s, err := NewNBitsFloatZP(40, 3, 4, 32, randScales(r, 6), fz)
	if err != nil {
		t.Fatal(err)
	}
	out["nbits4 float zp"] = s
	return out
}

func TestApplyRestoreBitExact(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	schemes := testSchemes(t, r)
	names := make([]string, 0, len(schemes))
	for name := range schemes {
		names = append(names, name)
	}
	slices.Sort(names) // a fixed order keeps the random draws reproducible
	for _, name := range names {
		s := schemes[name]
		for _, delta := range []bool{false, true} {
			for _, alpha := range []float32{1, 0.5, -2} {
				raw := make([]byte, s.RawLen())
				for i := range raw {
					raw[i] = byte(r.Uint32())
				}
				orig := append([]byte(nil), raw...)
				n := s.NumElements()
				idx := randIdx(r, n, n/3)
				vals := make([]float32, len(idx))
				for j := range vals {
					p := s.Param(int(idx[j]))
					vals[j] = float32(r.NormFloat64()) * 40 * s.Scales[p]
				}
				// expected codes computed element by element with the public API
				want := make([]int32, len(idx))
				var ref Survival
				for j, i := range idx {
					base := s.Dequantize(int(i), s.Code(orig, int(i)))
					var target float32
					switch {
					case delta:
						target = base + float32(alpha*vals[j])
					case alpha == 1:
						target = vals[j]
					default:
						target = base + float32(alpha*(vals[j]-base))
					}
					var cl bool
					want[j], cl = s.Quantize(int(i), target)
					// reference Survival, same definitions, element by element
					if want[j] == s.Code(orig, int(i)) {
						ref.Unchanged++
					}
					if cl {
						ref.Clipped++
					}
					in := float64(target) - float64(base)
					la := float64(s.Dequantize(int(i), want[j])) - float64(base)
					ref.IntendedSq += float64(in * in)
					ref.LandedSq += float64(la * la)
					ref.ErrSq += float64((la - in) * (la - in))
					ref.Dot += float64(in * la)
				}
				ref.Touched = len(idx)
				saved := make([]int32, len(idx))
				var st Survival
				var err error
				if delta {
					err = s.ApplyDelta(raw, idx, vals, alpha, saved, &st)
				} else {
					err = s.ApplyOverwrite(raw, idx, vals, alpha, saved, &st)
				}
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				in := make(map[uint32]bool, len(idx))
				for j, i := range idx {
					in[i] = true
					if got := s.Code(raw, int(i)); got != want[j] {
						t.Fatalf("%s delta=%v alpha=%v: code at %d = %d, want %d", name, delta, alpha, i, got, want[j])
					}
					if saved[j] != s.Code(orig, int(i)) {
						t.Fatalf("%s: saved[%d] = %d, original %d", name, j, saved[j], s.Code(orig, int(i)))
					}
				}
				for i := 0; i < n; i++ {
					if !in[uint32(i)] && s.Code(raw, i) != s.Code(orig, i) {
						t.Fatalf("%s: untouched element %d changed", name, i)
					}
				}
				if st != ref || st.Unchanged == len(idx) {
					t.Fatalf("%s delta=%v alpha=%v: stats\n%+v\nwant\n%+v", name, delta, alpha, st, ref)
				}
				if bytes.Equal(raw, orig) {
					t.Fatalf("%s: nothing changed", name)
				}
				// padding codes of the last partial block are never written
				if s.Kind == KindNBits {
					checkPaddingUntouched(t, name, s, raw, orig)
				}
				if err := s.Restore(raw, idx, saved); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(raw, orig) {
					t.Fatalf("%s delta=%v alpha=%v: Restore is not bit-exact", name, delta, alpha)
				}
			}
		}
	}
}

// checkPaddingUntouched compares the bits of every code beyond K in the
// last block of each column.
func checkPaddingUntouched(t *testing.T, name string, s *Scheme, raw, orig []byte) {
	t.Helper()
	K := int(s.Shape[0])
	kb := s.KBlocks()
	blob := s.BlockSize * s.Bits / 8
	for n := 0; n < int(s.Shape[1]); n++ {
		for j := K - (kb-1)*s.BlockSize; j < s.BlockSize; j++ {
			bit := j * s.Bits
			off := (n*kb+kb-1)*blob + bit/8
			m := byte(1<<s.Bits-1) << (bit % 8)
			if raw[off]&m != orig[off]&m {
				t.Fatalf("%s: padding code %d of column %d changed", name, j, n)
			}
		}
	}
}

func TestApplyWithoutSavedOrStats(t *testing.T) {
	s := mustQDQ(t, tensor.Int8, []int64{4}, 0, []float32{0.5}, nil)
	raw := []byte{4, 0, 0, 0}
	if err := s.ApplyDelta(raw, []uint32{0, 3}, []float32{1, -1}, 1, nil, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw, []byte{6, 0, 0, 0xfe}) {
		t.Fatalf("raw = % x", raw)
	}
}

func TestSurvivalHandComputed(t *testing.T) {
	// int8 per tensor, scale 0.5, zp 0; codes 4, -2, 127, 0 are the bases
	// 2, -1, 63.5, 0. Overwrite, alpha 1 (target = v):
	//   i0: v 2.625  -> 5.25 -> 5   landed 0.5, intended 0.625
	//   i1: v -1.125 -> -2.25 -> -2 unchanged: landed 0, intended -0.125
	//   i2: v 100    -> 200 -> 127  clipped and unchanged: landed 0, intended 36.5
	//   i3: v 0.75   -> 1.5 -> 2 (ties to even) landed 1, intended 0.75
	s := mustQDQ(t, tensor.Int8, []int64{4}, 0, []float32{0.5}, nil)
	raw := []byte{4, 0xfe, 127, 0}
	var st Survival
	saved := make([]int32, 4)
	if err := s.ApplyOverwrite(raw, []uint32{0, 1, 2, 3}, []float32{2.625, -1.125, 100, 0.75}, 1, saved, &st); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw, []byte{5, 0xfe, 127, 2}) {
		t.Fatalf("raw = % x", raw)
	}
	want := Survival{
		Touched: 4, Unchanged: 2, Clipped: 1,
		IntendedSq: 0.390625 + 0.015625 + 1332.25 + 0.5625, // 1333.21875
		LandedSq:   0.25 + 1,
		ErrSq:      0.015625 + 0.015625 + 1332.25 + 0.0625, // 1332.34375
		Dot:        0.3125 + 0.75,
	}
	if st != want {
		t.Fatalf("Survival = %+v\nwant       %+v", st, want)
	}
	if got, w := st.LandedFraction(), math.Sqrt(1.25/1333.21875); got != w {
		t.Errorf("LandedFraction = %v, want %v", got, w)
	}
	if got, w := st.RelativeError(), math.Sqrt(1332.34375/1333.21875); got != w {
		t.Errorf("RelativeError = %v, want %v", got, w)
	}
	if got, w := st.Projection(), 1.0625/1333.21875; got != w {
		t.Errorf("Projection = %v, want %v", got, w)
	}
	if !bytes.Equal(saved2bytes(saved), []byte{4, 0xfe, 127, 0}) {
		t.Errorf("saved = %v", saved)
	}

	// Delta with alpha 0.5 lands exactly: 2 + 0.5·1 = 2.5 = code 5.
	raw = []byte{4, 0, 0, 0}
	var st2 Survival
	if err := s.ApplyDelta(raw, []uint32{0}, []float32{1}, 0.5, nil, &st2); err != nil {
		t.Fatal(err)
	}
	if raw[0] != 5 || st2.RelativeError() != 0 || st2.LandedFraction() != 1 || st2.Projection() != 1 || st2.Unchanged != 0 {
		t.Fatalf("exact delta: raw %d, %v", raw[0], st2)
	}
	// Overwrite alpha 0.5: 2 + float32(0.5·(3 − 2)) = 2.5 -> 5
	raw = []byte{4, 0, 0, 0}
	if err := s.ApplyOverwrite(raw, []uint32{0}, []float32{3}, 0.5, nil, nil); err != nil || raw[0] != 5 {
		t.Fatalf("overwrite alpha 0.5: raw %d, %v", raw[0], err)
	}
	// Overwrite alpha 1 intends v itself, not base + float32(v − base):
	// base 63.5, v = 1e-9: float32(1e-9 − 63.5) = −63.5, which would
	// intend exactly −63.5.
	raw = []byte{127, 0, 0, 0}
	var st3 Survival
	if err := s.ApplyOverwrite(raw, []uint32{0}, []float32{1e-9}, 1, nil, &st3); err != nil {
		t.Fatal(err)
	}
	in := float64(float32(1e-9)) - 63.5
	if raw[0] != 0 || st3.IntendedSq != in*in {
		t.Fatalf("alpha 1: raw %d, IntendedSq %v want %v", raw[0], st3.IntendedSq, in*in)
	}

	// Add and the empty cases
	var tot Survival
	tot.Add(st)
	tot.Add(st2)
	if tot.Touched != 5 || tot.IntendedSq != want.IntendedSq+0.25 {
		t.Errorf("Add: %+v", tot)
	}
	var empty Survival
	if empty.LandedFraction() != 1 || empty.RelativeError() != 0 || empty.Projection() != 1 {
		t.Errorf("empty ratios: %v", empty)
	}
	if (Survival{LandedSq: 1, ErrSq: 1}).LandedFraction() != math.Inf(1) {
		t.Error("nothing intended but something landed should be +Inf")
	}
}

func saved2bytes(s []int32) []byte {
	b := make([]byte, len(s))
	for i, q := range s {
		b[i] = byte(q)
	}
	return b
}

func TestApplyNaNValue(t *testing.T) {
	s := mustQDQ(t, tensor.Uint8, []int64{2}, 0, []float32{1}, zpBytes(tensor.Uint8, 100))
	raw := []byte{120, 120}
	var st Survival
	if err := s.ApplyOverwrite(raw, []uint32{0, 1}, []float32{float32(math.NaN()), 21}, 1, nil, &st); err != nil {
		t.Fatal(err)
	}
	if raw[0] != 0 || raw[1] != 121 || st.Clipped != 1 || st.NonFinite != 1 || st.IntendedSq != 1 {
		t.Fatalf("raw % x, %+v", raw, st)
	}
}

func TestBatchErrorsLeaveRawUntouched(t *testing.T) {
	s := mustNBits(t, 32, 2, 4, 16, ones(4), nil)
	raw := bytes.Repeat([]byte{0x77}, s.RawLen())
	orig := append([]byte(nil), raw...)
	v := []float32{1, 1, 1}
	for _, c := range []struct {
		name  string
		raw   []byte
		idx   []uint32
		vals  []float32
		saved []int32
		alpha float32
	}{
		{"unsorted", raw, []uint32{0, 5, 3}, v, nil, 1},
		{"duplicate", raw, []uint32{0, 3, 3}, v, nil, 1},
		{"out of range", raw, []uint32{0, 3, 64}, v, nil, 1},
		{"short raw", raw[:31], []uint32{0, 3, 4}, v, nil, 1},
		{"vals length", raw, []uint32{0, 3}, v, nil, 1},
		{"saved length", raw, []uint32{0, 3, 4}, v, make([]int32, 2), 1},
		{"NaN alpha", raw, []uint32{0, 3, 4}, v, nil, float32(math.NaN())},
		{"Inf alpha", raw, []uint32{0, 3, 4}, v, nil, float32(math.Inf(1))},
	} {
		for _, delta := range []bool{false, true} {
			var err error
			if delta {
				err = s.ApplyDelta(c.raw, c.idx, c.vals, c.alpha, c.saved, nil)
			} else {
				err = s.ApplyOverwrite(c.raw, c.idx, c.vals, c.alpha, c.saved, nil)
			}
			if !errors.Is(err, ErrBatch) {
				t.Errorf("%s: err = %v, want ErrBatch", c.name, err)
			}
			if !bytes.Equal(raw, orig) {
				t.Fatalf("%s: raw changed on error", c.name)
			}
		}
	}
	for _, c := range []struct {
		name  string
		idx   []uint32
		saved []int32
	}{
		{"restore unsorted", []uint32{2, 1}, []int32{0, 0}},
		{"restore nil saved", []uint32{1, 2}, nil},
		{"restore code range", []uint32{1, 2}, []int32{3, 16}},
		{"restore negative code", []uint32{1, 2}, []int32{-1, 0}},
	} {
		if err := s.Restore(raw, c.idx, c.saved); !errors.Is(err, ErrBatch) {
			t.Errorf("%s: err = %v", c.name, err)
		}
		if !bytes.Equal(raw, orig) {
			t.Fatalf("%s: raw changed on error", c.name)
		}
	}
	if err := (&Scheme{}).Restore(nil, nil, nil); !errors.Is(err, ErrBatch) {
		t.Errorf("unvalidated: %v", err)
	}
	// empty batch is fine
	if err := s.ApplyOverwrite(raw, nil, nil, 1, nil, nil); err != nil {
		t.Error(err)
	}
}
