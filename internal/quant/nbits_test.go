package quant

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// refNBitsLoc locates element (k, n) straight from the ContribOperators.md
// description: B[n][kb][byte], 8/bits codes per byte, first code in the
// lowest bits.
func refNBitsLoc(k, n, K, bits, bs int) (off int, shift uint) {
	kBlocks := (K + bs - 1) / bs
	blob := bs * bits / 8
	kb, j := k/bs, k%bs
	per := 8 / bits
	return n*kBlocks*blob + kb*blob + j/per, uint((j % per) * bits)
}

func mustNBits(t testing.TB, k, n, bits, bs int, scales []float32, zp []byte) *Scheme {
	t.Helper()
	s, err := NewNBits(k, n, bits, bs, scales, zp)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func randScales(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = 0.001 + r.Float32()*0.05
	}
	return s
}

func TestNBitsLayoutAndNeighbours(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct{ K, N, bits, bs int }{
		{64, 3, 4, 32}, {40, 3, 4, 32}, {16, 1, 4, 16}, {48, 5, 2, 16}, {33, 2, 8, 32}, {100, 7, 4, 64},
	} {
		kb := (c.K + c.bs - 1) / c.bs
		s := mustNBits(t, c.K, c.N, c.bits, c.bs, randScales(r, c.N*kb), nil)
		if want := c.N * kb * c.bs * c.bits / 8; s.RawLen() != want {
			t.Fatalf("%+v: RawLen %d, want %d", c, s.RawLen(), want)
		}
		if s.NumElements() != c.K*c.N || s.KBlocks() != kb {
			t.Fatalf("%+v: NumElements %d KBlocks %d", c, s.NumElements(), s.KBlocks())
		}
		raw := make([]byte, s.RawLen())
		for i := range raw {
			raw[i] = byte(r.Uint32())
		}
		mask := byte(1<<c.bits - 1)
		// Code reads what the reference layout says
		for k := 0; k < c.K; k++ {
			for n := 0; n < c.N; n++ {
				off, sh := refNBitsLoc(k, n, c.K, c.bits, c.bs)
				i := k*c.N + n
				if got, want := s.Code(raw, i), int32(raw[off]>>sh&mask); got != want {
					t.Fatalf("%+v: Code(k=%d, n=%d) = %d, want %d", c, k, n, got, want)
				}
				if o, l := s.ByteRange(i); o != off || l != 1 {
					t.Fatalf("%+v: ByteRange(k=%d, n=%d) = %d, %d; want %d, 1", c, k, n, o, l, off)
				}
				if p := s.Param(i); p != n*kb+k/c.bs {
					t.Fatalf("%+v: Param(k=%d, n=%d) = %d", c, k, n, p)
				}
			}
		}
		// SetCode of every position of every block, every code value, touches
		// only its own bits
		lo, hi := s.CodeRange()
		if lo != 0 || hi != int32(mask) {
			t.Fatalf("CodeRange %d %d", lo, hi)
		}
		for k := 0; k < c.K; k++ {
			for n := 0; n < c.N; n++ {
				i := k*c.N + n
				off, sh := refNBitsLoc(k, n, c.K, c.bits, c.bs)
				for q := lo; q <= hi; q++ {
					before := append([]byte(nil), raw...)
					s.SetCode(raw, i, q)
					if s.Code(raw, i) != q {
						t.Fatalf("%+v: SetCode(k=%d, n=%d, %d) reads back %d", c, k, n, q, s.Code(raw, i))
					}
					for b := range raw {
						diff := raw[b] ^ before[b]
						if b == off {
							diff &^= mask << sh
						}
						if diff != 0 {
							t.Fatalf("%+v: SetCode(k=%d, n=%d) changed byte %d: %#x -> %#x", c, k, n, b, before[b], raw[b])
						}
					}
				}
			}
		}
	}
}

func TestNBitsOddKPadding(t *testing.T) {
	// K = 40, block 32: k_blocks = 2, the second block holds 8 real codes
	// and 24 padding codes (12 bytes at 4 bits) that must never be written.
	const K, N, bs = 40, 3, 32
	s := mustNBits(t, K, N, 4, bs, ones(N*2), nil)
	raw := bytes.Repeat([]byte{0xA5}, s.RawLen())
	for i := 0; i < K*N; i++ {
		s.SetCode(raw, i, int32(i%16))
	}
	for n := 0; n < N; n++ {
		blk := raw[(n*2+1)*16 : (n*2+2)*16] // block kb=1 of column n
		for j := 8; j < 32; j++ {
			if nib := blk[j/2] >> (4 * (j % 2)) & 0xF; nib != 0x5 && nib != 0xA {
				t.Fatalf("column %d padding code %d changed to %#x", n, j, nib)
			}
		}
		if !bytes.Equal(blk[4:], bytes.Repeat([]byte{0xA5}, 12)) {
			t.Fatalf("column %d padding bytes changed: % x", n, blk[4:])
		}
		// k = 39 is position 7 of block 1: byte 3, high nibble
		if got := blk[3] >> 4; int32(got) != int32((39*N+n)%16) {
			t.Fatalf("column %d k=39 nibble %d", n, got)
		}
		if got := blk[0] & 0xF; int32(got) != int32((32*N+n)%16) {
			t.Fatalf("column %d k=32 nibble %d", n, got)
		}
	}
	if s.Param(39*N+2) != 2*2+1 {
		t.Errorf("Param(k=39, n=2) = %d", s.Param(39*N+2))
	}
}

func TestNBitsPackedZeroPointsOddKBlocks(t *testing.T) {
	// K = 80, block 16: k_blocks = 5 (odd); N = 3.
	const K, N, bs = 80, 3, 16
	zp := []int32{
		1, 2, 3, 4, 5, // column 0
		15, 0, 7, 9, 14, // column 1
		8, 8, 8, 8, 6, // column 2
	}
	// 4 bits: 3 bytes per column, the last one half padding
	packed := []byte{
		0x21, 0x43, 0x05,
		0x0F, 0x97, 0x0E,
		0x88, 0x88, 0x06,
	}
	if NBitsZeroPointBytes(N, 5, 4) != 9 {
		t.Fatalf("NBitsZeroPointBytes = %d", NBitsZeroPointBytes(N, 5, 4))
	}
	got, err := UnpackNBitsZeroPoints(packed, N, 5, 4)
	if err != nil {
		t.Fatal(err)
	}
	for p := range zp {
		if got[p] != zp[p] {
			t.Fatalf("unpacked zp[%d] = %d, want %d", p, got[p], zp[p])
		}
	}
	back, err := PackNBitsZeroPoints(zp, N, 5, 4)
	if err != nil || !bytes.Equal(back, packed) {
		t.Fatalf("Pack = % x, %v; want % x", back, err, packed)
	}
	scales := make([]float32, N*5)
	for p := range scales {
		scales[p] = float32(p+1) * 0.5
	}
	s := mustNBits(t, K, N, 4, bs, scales, packed)
	for k := 0; k < K; k++ {
		for n := 0; n < N; n++ {
			p := n*5 + k/bs
			if got, want := s.Dequantize(k*N+n, 10), float32(10-zp[p])*scales[p]; got != want {
				t.Fatalf("Dequantize(k=%d, n=%d, 10) = %v, want %v", k, n, got, want)
			}
		}
	}
	// 2 bits, k_blocks 5: 2 bytes per column (10 bits used)
	zp2 := []int32{1, 2, 3, 0, 2, 3, 3, 0, 1, 1}
	packed2 := []byte{0x39, 0x02, 0x4F, 0x01}
	if b, err := PackNBitsZeroPoints(zp2, 2, 5, 2); err != nil || !bytes.Equal(b, packed2) {
		t.Fatalf("2-bit Pack = % x, %v; want % x", b, err, packed2)
	}
	if u, err := UnpackNBitsZeroPoints(packed2, 2, 5, 2); err != nil || u[4] != 2 || u[9] != 1 || u[5] != 3 {
		t.Fatalf("2-bit Unpack = %v, %v", u, err)
	}
	// 8 bits: one byte each
	if b, _ := PackNBitsZeroPoints([]int32{200, 1, 128}, 1, 3, 8); !bytes.Equal(b, []byte{200, 1, 128}) {
		t.Fatalf("8-bit Pack = % x", b)
	}
	if _, err := PackNBitsZeroPoints([]int32{16}, 1, 1, 4); err == nil {
		t.Error("Pack accepted zero point 16 at 4 bits")
	}
}

func TestNBitsDefaultZeroPoint(t *testing.T) {
	for _, c := range []struct {
		bits int
		zp   int32
	}{{2, 2}, {4, 8}, {8, 128}} {
		s := mustNBits(t, 32, 2, c.bits, 16, []float32{0.5, 0.25, 2, 4}, nil)
		for i := 0; i < 64; i++ {
			if got := s.Dequantize(i, c.zp); got != 0 {
				t.Fatalf("bits %d: Dequantize(%d, %d) = %v", c.bits, i, c.zp, got)
			}
		}
		// element (k=20, n=1): block 1 of column 1 -> scale index 3 (= 4)
		if got := s.Dequantize(20*2+1, c.zp+1); got != 4 {
			t.Fatalf("bits %d: Dequantize(zp+1) = %v, want 4", c.bits, got)
		}
		if q, _ := s.Quantize(20*2+1, 0); q != c.zp {
			t.Fatalf("bits %d: Quantize(0) = %d, want %d", c.bits, q, c.zp)
		}
	}
}

func TestNBitsRoundTripAndSaturation(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, bits := range []int{2, 4, 8} {
		const K, N, bs = 48, 2, 16
		kb := 3
		hi := int32(1<<bits - 1)
		zps := make([]int32, N*kb)
		for p := range zps {
			zps[p] = r.Int32N(hi + 1)
		}
		packed, err := PackNBitsZeroPoints(zps, N, kb, bits)
		if err != nil {
			t.Fatal(err)
		}
		scales := randScales(r, N*kb)
		scales[1] = -scales[1] // a negative (symmetric-quantizer) scale
		fzp := make([]float32, N*kb)
		for p := range fzp {
			fzp[p] = float32(zps[p]) + r.Float32() - 0.5
		}
		si := mustNBits(t, K, N, bits, bs, scales, packed)
		sf, err := NewNBitsFloatZP(K, N, bits, bs, scales, fzp)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []*Scheme{si, sf} {
			for i := 0; i < K*N; i++ {
				for q := int32(0); q <= hi; q++ {
					x := s.Dequantize(i, q)
					if back, cl := s.Quantize(i, x); back != q || cl {
						t.Fatalf("bits %d float zp %v: element %d code %d -> %v -> %d (%v)", bits, s.FloatZeroPoints != nil, i, q, x, back, cl)
					}
				}
				// beyond the range on both sides saturates
				above := s.Dequantize(i, hi+2)
				below := s.Dequantize(i, -2)
				if q, cl := s.Quantize(i, above); q != hi || !cl {
					t.Fatalf("bits %d: above range -> %d, %v", bits, q, cl)
				}
				if q, cl := s.Quantize(i, below); q != 0 || !cl {
					t.Fatalf("bits %d: below range -> %d, %v", bits, q, cl)
				}
			}
		}
		// float zero point: (q - zp)·scale with a fractional zp
		p := sf.Param(5)
		if got, want := sf.Dequantize(5, 3), (float32(3)-fzp[p])*scales[p]; got != want {
			t.Fatalf("float zp Dequantize = %v, want %v", got, want)
		}
	}
}
