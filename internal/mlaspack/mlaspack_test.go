package mlaspack

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

var (
	testKs = []int{1, 15, 16, 17, 255, 256, 257, 511, 512, 600, 1000}
	testNs = []int{1, 15, 16, 17, 31, 33, 520}
)

// forShapes runs f on every test shape in both orientations.
func forShapes(t *testing.T, f func(t *testing.T, l Layout)) {
	for _, k := range testKs {
		for _, n := range testNs {
			for _, trans := range []bool{false, true} {
				shape := []int64{int64(k), int64(n)}
				if trans {
					shape = []int64{int64(n), int64(k)}
				}
				l, err := NewLayout(shape, trans)
				if err != nil {
					t.Fatal(err)
				}
				if l.K != k || l.N != n || l.Trans != trans {
					t.Fatalf("NewLayout(%v, %v) = %+v", shape, trans, l)
				}
				t.Run(fmt.Sprintf("K%d_N%d_T%v", k, n, trans), func(t *testing.T) { f(t, l) })
			}
		}
	}
}

// refOffset is the packed layout written out naively: the packed element
// offset of B[k][n].
func refOffset(K, N, k, n int) int {
	alignedN := (N + 15) / 16 * 16
	s := k / 256
	ck := min(256, K-256*s)
	return alignedN*256*s + n/16*16*ck + k%256*16 + n%16
}

// refKN is B's (k, n) for a flat index of the weight as stored.
func refKN(l Layout, flat int) (k, n int) {
	if l.Trans {
		return flat % l.K, flat / l.K
	}
	return flat / l.N, flat % l.N
}

// refPack packs bits (the weight as stored) by the naive formula.
func refPack(l Layout, w []uint32) []uint32 {
	alignedN := (l.N + 15) / 16 * 16
	out := make([]uint32, alignedN*l.K)
	for flat, v := range w {
		k, n := refKN(l, flat)
		out[refOffset(l.K, l.N, k, n)] = v
	}
	return out
}

func TestNewLayout(t *testing.T) {
	for _, tc := range []struct {
		shape       []int64
		trans       bool
		k, n, align int64
	}{
		{[]int64{3, 5}, false, 3, 5, 16},
		{[]int64{3, 5}, true, 5, 3, 16},
		{[]int64{4096, 11008}, false, 4096, 11008, 11008},
		{[]int64{11008, 4096}, true, 4096, 11008, 11008},
		{[]int64{1, 17}, false, 1, 17, 32},
		{[]int64{1 << 16, 1 << 16}, false, 1 << 16, 1 << 16, 1 << 16}, // 2^32 elements: last offset fits
		{[]int64{1 << 32, 1}, true, 1, 1 << 32, 1 << 32},
	} {
		l, err := NewLayout(tc.shape, tc.trans)
		if tc.k*tc.align*4 > math.MaxInt { // 32-bit int: byte counts overflow
			if err == nil {
				t.Errorf("NewLayout(%v, %v) = %+v, want error (int overflow)", tc.shape, tc.trans, l)
			}
			continue
		}
		if err != nil {
			t.Errorf("NewLayout(%v, %v): %v", tc.shape, tc.trans, err)
			continue
		}
		k, n, align := int(tc.k), int(tc.n), int(tc.align)
		if l.K != k || l.N != n || l.AlignedN() != align || l.PackedLen() != k*align || l.PackedBytes() != 4*k*align {
			t.Errorf("NewLayout(%v, %v) = %+v, AlignedN %d, PackedLen %d, PackedBytes %d", tc.shape, tc.trans, l, l.AlignedN(), l.PackedLen(), l.PackedBytes())
		}
	}
	for _, shape := range [][]int64{
		nil, {4}, {2, 3, 4}, {0, 4}, {4, 0}, {-1, 4},
		{1<<16 + 1, 1 << 16},         // one row too many
		{1<<16 - 1, 1<<16 + 1},       // K·N fits, padding pushes it over
		{2, 1 << 32},                 // over by a factor of 2
		{1 << 40, 1 << 40},           // product overflows uint64 checks
		{math.MaxInt64, 1},           // dimension alone is too large
		{1, math.MaxInt64 - 3},       // AlignedN would overflow
		{1 << 33, 1}, {1, 1<<32 + 1}, // a dimension over 2^32
	} {
		for _, trans := range []bool{false, true} {
			if l, err := NewLayout(shape, trans); err == nil {
				t.Errorf("NewLayout(%v, %v) = %+v, want error", shape, trans, l)
			}
		}
	}
}

func TestOffsetBijection(t *testing.T) {
	forShapes(t, func(t *testing.T, l Layout) {
		seen := make([]bool, l.PackedLen())
		for flat := range l.K * l.N {
			off := l.Offset(flat)
			k, n := refKN(l, flat)
			if want := refOffset(l.K, l.N, k, n); off != want {
				t.Fatalf("Offset(%d) = %d, want %d", flat, off, want)
			}
			if seen[off] {
				t.Fatalf("Offset(%d) = %d twice", flat, off)
			}
			seen[off] = true
			if got, ok := l.Index(off); !ok || got != flat {
				t.Fatalf("Index(%d) = %d, %v; want %d, true", off, got, ok, flat)
			}
		}
		pad := 0
		for off, s := range seen {
			if s {
				continue
			}
			pad++
			if got, ok := l.Index(off); ok {
				t.Fatalf("Index(%d) = %d, true for an unused (padding) offset", off, got)
			}
		}
		if want := (l.AlignedN() - l.N) * l.K; pad != want {
			t.Fatalf("%d padding offsets, want %d", pad, want)
		}
		for _, off := range []int{-1, l.PackedLen(), l.PackedLen() + 100} {
			if _, ok := l.Index(off); ok {
				t.Fatalf("Index(%d) ok outside the buffer", off)
			}
		}
		for _, flat := range []int{-1, l.K * l.N} {
			func() {
				defer func() {
					if recover() == nil {
						t.Errorf("Offset(%d) did not panic", flat)
					}
				}()
				l.Offset(flat)
			}()
		}
	})
}

// randomWeight returns random float32 bits with some special values
// (±0, NaNs with payloads, infinities) mixed in.
func randomWeight(r *rand.Rand, n int) []uint32 {
	special := []uint32{0, 0x80000000, 0x7fc00001, 0xffc12345, 0x7f800001, 0x7f800000, 0xff800000, 1}
	w := make([]uint32, n)
	for i := range w {
		if r.IntN(8) == 0 {
			w[i] = special[r.IntN(len(special))]
		} else {
			w[i] = r.Uint32() | 1 // never zero, so misplaced zero padding shows
		}
	}
	return w
}

func bitsToFloats(b []uint32) []float32 {
	f := make([]float32, len(b))
	for i, v := range b {
		f[i] = math.Float32frombits(v)
	}
	return f
}

func floatsToBits(f []float32) []uint32 {
	b := make([]uint32, len(f))
	for i, v := range f {
		b[i] = math.Float32bits(v)
	}
	return b
}

func bitsToBytes(b []uint32) []byte {
	out := make([]byte, 4*len(b))
	for i, v := range b {
		binary.LittleEndian.PutUint32(out[4*i:], v)
	}
	return out
}

func TestPack(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	forShapes(t, func(t *testing.T, l Layout) {
		w := randomWeight(r, l.K*l.N)
		dst := make([]float32, l.PackedLen())
		for i := range dst {
			dst[i] = math.Float32frombits(0x7fc0dead) // garbage Pack must overwrite
		}
		l.Pack(dst, bitsToFloats(w))
		if got, want := floatsToBits(dst), refPack(l, w); !slices.Equal(got, want) {
			i := 0
			for got[i] == want[i] {
				i++
			}
			t.Fatalf("Pack differs from the reference first at offset %d: %#x, want %#x", i, got[i], want[i])
		}
	})
	l := Layout{K: 3, N: 5}
	for _, c := range [][2]int{{15, 15}, {16, 48}, {15, 47}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Pack(len %d, len %d) did not panic", c[1], c[0])
				}
			}()
			l.Pack(make([]float32, c[1]), make([]float32, c[0]))
		}()
	}
}

func TestMatches(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	forShapes(t, func(t *testing.T, l Layout) {
		wBits := randomWeight(r, l.K*l.N)
		w := bitsToBytes(wBits)
		buf := bitsToBytes(refPack(l, wBits))
		if !l.Matches(buf, w) {
			t.Fatal("Matches(packed weight) = false")
		}
		// A single flipped bit anywhere in either buffer is a mismatch.
		flips := []int{0, 7, 31, len(buf)*8 - 1, r.IntN(len(buf) * 8), r.IntN(len(buf) * 8)}
		if l.N%16 != 0 {
			// padding: after the last column of the last panel, first and last row
			last := l.AlignedN()/16 - 1
			ck0 := min(256, l.K)
			flips = append(flips, 8*4*refOffset(l.K, l.N, 0, last*16)+8*4*(l.N%16)+3)
			flips = append(flips, 8*4*(refOffset(l.K, l.N, l.K-1, last*16)+15)+30)
			flips = append(flips, 8*4*(last*16*ck0+15)) // first row of the last panel, last column
		}
		for _, bit := range flips {
			buf[bit/8] ^= 1 << (bit % 8)
			if l.Matches(buf, w) {
				t.Errorf("Matches after flipping packed bit %d = true", bit)
			}
			buf[bit/8] ^= 1 << (bit % 8)
		}
		for _, bit := range []int{0, len(w)*8 - 1, r.IntN(len(w) * 8)} {
			w[bit/8] ^= 1 << (bit % 8)
			if l.Matches(buf, w) {
				t.Errorf("Matches after flipping weight bit %d = true", bit)
			}
			w[bit/8] ^= 1 << (bit % 8)
		}
		// -0 vs +0 and NaN payloads compare bitwise.
		for _, pair := range [][2]uint32{{0, 0x80000000}, {0x80000000, 0}, {0x7fc00001, 0x7fc00002}, {0x7fc00000, 0xffc00000}} {
			flat := r.IntN(l.K * l.N)
			old := binary.LittleEndian.Uint32(w[4*flat:])
			k, n := refKN(l, flat)
			off := refOffset(l.K, l.N, k, n)
			binary.LittleEndian.PutUint32(w[4*flat:], pair[0])
			binary.LittleEndian.PutUint32(buf[4*off:], pair[0])
			if !l.Matches(buf, w) {
				t.Errorf("Matches with %#x at flat %d = false", pair[0], flat)
			}
			binary.LittleEndian.PutUint32(buf[4*off:], pair[1])
			if l.Matches(buf, w) {
				t.Errorf("Matches with weight %#x, packed %#x = true", pair[0], pair[1])
			}
			binary.LittleEndian.PutUint32(w[4*flat:], old)
			binary.LittleEndian.PutUint32(buf[4*off:], old)
		}
		if !l.Matches(buf, w) {
			t.Fatal("Matches = false after restoring")
		}
		if a := testing.AllocsPerRun(2, func() { l.Matches(buf, w) }); a != 0 {
			t.Errorf("Matches allocates (%v per run)", a)
		}
		// Misaligned buffers take the element-by-element path.
		for _, shift := range [][2]int{{1, 0}, {0, 3}, {4, 4}} {
			mb := append(make([]byte, shift[0]), buf...)[shift[0]:]
			mw := append(make([]byte, shift[1]), w...)[shift[1]:]
			if !l.Matches(mb, mw) {
				t.Fatalf("Matches at byte shifts %v = false", shift)
			}
			for _, bit := range []int{0, len(buf)*8 - 1, r.IntN(len(buf) * 8)} {
				mb[bit/8] ^= 1 << (bit % 8)
				if l.Matches(mb, mw) {
					t.Errorf("Matches at byte shifts %v after flipping packed bit %d = true", shift, bit)
				}
				mb[bit/8] ^= 1 << (bit % 8)
			}
		}
		// Wrong lengths.
		for _, c := range [][2][]byte{
			{buf[:len(buf)-4], w}, {buf[:len(buf)-1], w}, {append(slices.Clone(buf), 0, 0, 0, 0), w},
			{buf, w[:len(w)-4]}, {buf, append(slices.Clone(w), 0, 0, 0, 0)}, {nil, nil},
		} {
			if l.Matches(c[0], c[1]) {
				t.Errorf("Matches(len %d, len %d) = true", len(c[0]), len(c[1]))
			}
		}
	})
}

// randomSparse returns sorted distinct flat indices of a size-element
// weight, each present with probability density (or exactly count of them
// when count >= 0), and random values of the given size.
func randomSparse(r *rand.Rand, size int, density float64, count, valueSize int) ([]uint32, []byte) {
	var idx []uint32
	switch {
	case count >= 0:
		seen := map[uint32]bool{}
		for len(seen) < count {
			seen[uint32(r.IntN(size))] = true
		}
		for i := range seen {
			idx = append(idx, i)
		}
		slices.Sort(idx)
	default:
		for i := range size {
			if r.Float64() < density {
				idx = append(idx, uint32(i))
			}
		}
	}
	vals := make([]byte, len(idx)*valueSize)
	for i := range vals {
		vals[i] = byte(r.Uint32())
	}
	return idx, vals
}

// refTranslate computes offsets one by one and sorts the pairs.
func refTranslate(l Layout, idx []uint32, vals []byte, vs int) ([]uint32, []byte) {
	type pair struct {
		off uint32
		val []byte
	}
	ps := make([]pair, len(idx))
	for i, f := range idx {
		k, n := refKN(l, int(f))
		ps[i] = pair{uint32(refOffset(l.K, l.N, k, n)), vals[i*vs : (i+1)*vs]}
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].off < ps[j].off })
	offs := make([]uint32, len(ps))
	out := make([]byte, 0, len(vals))
	for i, p := range ps {
		offs[i] = p.off
		out = append(out, p.val...)
	}
	return offs, out
}

// checkTranslate runs Translate and compares it with refTranslate.
func checkTranslate(t testing.TB, l Layout, idx []uint32, vals []byte, vs int) {
	t.Helper()
	wantOff, wantVals := refTranslate(l, idx, vals, vs)
	idx0, vals0 := slices.Clone(idx), slices.Clone(vals)
	off, pv := l.Translate(idx, vals, vs)
	if !slices.Equal(idx, idx0) || !slices.Equal(vals, vals0) {
		t.Fatal("Translate modified its inputs")
	}
	if len(off) != len(idx) || len(pv) != len(vals) {
		t.Fatalf("Translate: %d offsets, %d value bytes; want %d, %d", len(off), len(pv), len(idx), len(vals))
	}
	for j := 1; j < len(off); j++ {
		if off[j] <= off[j-1] {
			t.Fatalf("offsets not strictly increasing at %d: %d after %d", j, off[j], off[j-1])
		}
	}
	if !slices.Equal(off, wantOff) {
		t.Fatal("offsets differ from the reference")
	}
	if !slices.Equal(pv, wantVals) {
		t.Fatal("values differ from the reference")
	}
	// Every packed offset maps back to its entry.
	for j, o := range off {
		f, ok := l.Index(int(o))
		if !ok {
			t.Fatalf("offset %d is padding", o)
		}
		i, found := slices.BinarySearch(idx, uint32(f))
		if !found || !slices.Equal(pv[j*vs:(j+1)*vs], vals[i*vs:(i+1)*vs]) {
			t.Fatalf("entry %d (offset %d) does not carry the value of flat %d", j, o, f)
		}
	}
}

func TestTranslate(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	shapes := [][2]int{{1, 1}, {1, 17}, {17, 1}, {15, 33}, {257, 31}, {600, 520}, {1000, 17}, {513, 48}}
	for _, sh := range shapes {
		for _, trans := range []bool{false, true} {
			l := Layout{K: sh[0], N: sh[1], Trans: trans}
			size := l.K * l.N
			for _, vs := range []int{2, 4} {
				cases := []struct {
					density float64
					count   int
				}{{0, 0}, {0, 1}, {0.01, -1}, {0.5, -1}, {1, -1}, {0, min(size, 3)}}
				for _, c := range cases {
					t.Run(fmt.Sprintf("K%d_N%d_T%v_v%d_d%v_c%d", l.K, l.N, trans, vs, c.density, c.count), func(t *testing.T) {
						idx, vals := randomSparse(r, size, c.density, c.count, vs)
						checkTranslate(t, l, idx, vals, vs)
					})
				}
			}
		}
	}
}

// TestTranslateLarge covers large sparse weights: far more blocks (and
// bitmap words) than entries, offsets beyond 2^24.
func TestTranslateLarge(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, sh := range [][2]int{{4096, 4100}, {32768, 32760}, {300, 1 << 22}} {
		for _, trans := range []bool{false, true} {
			l := Layout{K: sh[0], N: sh[1], Trans: trans}
			idx, vals := randomSparse(r, l.K*l.N, 0, 20000, 4)
			checkTranslate(t, l, idx, vals, 4)
		}
	}
	// The largest layout: offsets up to 2^32-1, first and last elements.
	for _, trans := range []bool{false, true} {
		if math.MaxInt < 1<<34 {
			t.Skip("the largest layout needs 64-bit int")
		}
		l, err := NewLayout([]int64{1 << 16, 1 << 16}, trans)
		if err != nil {
			t.Fatal(err)
		}
		idx, _ := randomSparse(r, l.K*l.N, 0, 1000, 2)
		idx = slices.Compact(slices.Concat([]uint32{0}, idx, []uint32{1<<32 - 1}))
		vals := make([]byte, 2*len(idx))
		for i := range vals {
			vals[i] = byte(i)
		}
		checkTranslate(t, l, idx, vals, 2)
	}
}

func TestTranslatePanics(t *testing.T) {
	l := Layout{K: 4, N: 5}
	for name, c := range map[string]struct {
		idx  []uint32
		vals []byte
		vs   int
	}{
		"valueSize3":    {[]uint32{1}, make([]byte, 3), 3},
		"valueSize8":    {[]uint32{1}, make([]byte, 8), 8},
		"shortValues":   {[]uint32{1, 2}, make([]byte, 6), 4},
		"longValues":    {[]uint32{1, 2}, make([]byte, 6), 2},
		"duplicate":     {[]uint32{1, 1}, make([]byte, 8), 4},
		"decreasing":    {[]uint32{3, 2}, make([]byte, 8), 4},
		"outOfRange":    {[]uint32{1, 20}, make([]byte, 8), 4},
		"farOutOfRange": {[]uint32{math.MaxUint32}, make([]byte, 4), 4},
	} {
		for _, trans := range []bool{false, true} {
			l.Trans = trans
			func() {
				defer func() {
					if recover() == nil {
						t.Errorf("%s (trans %v): Translate did not panic", name, trans)
					}
				}()
				l.Translate(c.idx, c.vals, c.vs)
			}()
		}
	}
}

func FuzzTranslate(f *testing.F) {
	f.Add(uint16(1), uint16(1), false, uint64(0), uint8(255), true)
	f.Add(uint16(300), uint16(33), true, uint64(1), uint8(10), false)
	f.Add(uint16(513), uint16(17), false, uint64(2), uint8(128), true)
	f.Fuzz(func(t *testing.T, k, n uint16, trans bool, seed uint64, density uint8, wide bool) {
		K, N := int(k%700)+1, int(n%300)+1
		l, err := NewLayout([]int64{int64(K), int64(N)}, trans)
		if err != nil {
			t.Fatal(err)
		}
		vs := 2
		if wide {
			vs = 4
		}
		r := rand.New(rand.NewPCG(seed, uint64(k)<<16|uint64(n)))
		idx, vals := randomSparse(r, K*N, float64(density)/255, -1, vs)
		checkTranslate(t, l, idx, vals, vs)
	})
}
