package patch

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/shira-ort/shira-ort/internal/quant"
)

// TestQLayoutParam checks the multiplicative (i / inner) % dim against
// the division for divisors and numerators at the edges of the fast path.
func TestQLayoutParam(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	divs := []uint64{2, 3, 5, 7, 64, 1000, 4095, 4096, 4097, 1<<16 + 1, 1<<31 - 1, 1 << 31, 1<<31 + 1, 1<<32 - 1}
	nums := []uint32{0, 1, 2, 4095, 4096, 1<<31 - 1, 1 << 31, math.MaxUint32 - 1, math.MaxUint32}
	for k := 0; k < 200; k++ {
		nums = append(nums, rng.Uint32())
	}
	for _, inner := range append([]uint64{1}, divs...) {
		for _, dim := range divs {
			l := qlayout{inner: inner, dim: dim, mDim: math.MaxUint64/dim + 1, mode: qLastAxis}
			if inner > 1 {
				l.mode, l.mInner = qInner, math.MaxUint64/inner+1
			}
			for _, i := range nums {
				if got, want := l.param(i), int(uint64(i)/inner%dim); got != want {
					t.Fatalf("inner %d dim %d i %d: %d, want %d", inner, dim, i, got, want)
				}
			}
		}
	}
}

// TestQuantSmallChunks reruns the quantized differential and refusal tests
// with tiny chunks, steps and a parallel threshold of 1, so that plan and
// commit run in many chunks on several workers (chunk boundaries, the
// first refusal across chunks, the address ranges of commitChunk).
func TestQuantSmallChunks(t *testing.T) {
	defer func(c, s, w int) { chunkEntries, switchBlock, serialWork = c, s, w }(chunkEntries, switchBlock, serialWork)
	for _, c := range []struct{ chunk, step int }{{1, 1}, {3, 2}, {5, 7}, {64, 3}} {
		chunkEntries, switchBlock, serialWork = c.chunk, c.step, 1
		t.Run("sequences", TestQuantSequences)
		t.Run("refused", TestQuantRefused)
		t.Run("survival", TestQuantSurvival)
		t.Run("exact", TestQuantExactOverwrite)
	}
}

// TestNBitsSmallChunks reruns the MatMulNBits tests (partial last blocks,
// 2-, 4- and 8-bit codes, every zero-point form) with tiny chunks, steps
// and a parallel threshold of 1, so that plan and commit run in many
// chunks on several workers: the chunk boundaries of planNBChunk, the
// first refusal across chunks, and the aligned chunks of commitNBChunk,
// whose bytes the race detector sees written by one chunk each.
func TestNBitsSmallChunks(t *testing.T) {
	defer func(c, s, w int) { chunkEntries, switchBlock, serialWork = c, s, w }(chunkEntries, switchBlock, serialWork)
	for _, c := range []struct{ chunk, step int }{{1, 1}, {2, 3}, {3, 2}, {5, 7}, {64, 3}} {
		chunkEntries, switchBlock, serialWork = c.chunk, c.step, 1
		t.Run("sequences", TestNBitsSequences)
		t.Run("refused", TestNBitsRefused)
		t.Run("nibbles", TestNBitsNibbles)
	}
}

// TestAddNBChunks checks that the commit chunks of a MatMulNBits weight
// cover its entries in order and never share a storage byte, for 2-, 4-
// and 8-bit codes, partial last blocks and chunk sizes down to 1.
func TestAddNBChunks(t *testing.T) {
	defer func(c int) { chunkEntries = c }(chunkEntries)
	rng := rand.New(rand.NewPCG(5, 6))
	for _, c := range []struct{ k, n, bits, bs int }{{37, 5, 4, 16}, {19, 3, 2, 32}, {29, 4, 8, 16}, {70, 1, 2, 16}, {33, 7, 4, 32}} {
		kb := (c.k + c.bs - 1) / c.bs
		scales := make([]float32, c.n*kb)
		for i := range scales {
			scales[i] = 1
		}
		sc, err := quant.NewNBits(c.k, c.n, c.bits, c.bs, scales, nil)
		if err != nil {
			t.Fatal(err)
		}
		l := newNBLayout(sc)
		for _, density := range []float64{0.1, 0.5, 1} {
			var ix []uint32
			for i := range c.k * c.n {
				if rng.Float64() < density {
					ix = append(ix, uint32(i))
				}
				wantOff, _ := sc.ByteRange(i)
				if p, off, sh := l.loc(uint32(i)); int(p) != sc.Param(i) || int(off) != wantOff || sh != uint(i/c.n%c.bs*c.bits%8) {
					t.Fatalf("%+v: loc(%d) = %d, %d, %d", c, i, p, off, sh)
				}
			}
			for _, ce := range []int{1, 2, 3, 7, 1 << 15} {
				chunkEntries = ce
				ts := addNBChunks(nil, 0, ix, &l)
				owner := map[int]int{}
				next := 0
				for ti, tk := range ts {
					if tk.lo != next || tk.hi <= tk.lo {
						t.Fatalf("%+v chunk %d: [%d, %d) after %d", c, ti, tk.lo, tk.hi, next)
					}
					next = tk.hi
					// the chunk's index range, as commitNBChunk takes it
					lo, hi := uint64(l.groupStart(ix, tk.lo)), uint64(c.k*c.n)
					if tk.hi < len(ix) {
						hi = uint64(l.groupStart(ix, tk.hi))
					}
					if uint64(ix[tk.lo]) < lo || (tk.hi < len(ix) && uint64(ix[tk.hi-1]) >= hi) {
						t.Fatalf("%+v chunk %d: entries outside [%d, %d)", c, ti, lo, hi)
					}
					for i := lo; i < hi; i++ {
						off, _ := sc.ByteRange(int(i))
						if o, ok := owner[off]; ok && o != ti {
							t.Fatalf("%+v: byte %d in chunks %d and %d", c, off, o, ti)
						}
						owner[off] = ti
					}
				}
				if next != len(ix) {
					t.Fatalf("%+v: chunks end at %d of %d", c, next, len(ix))
				}
			}
		}
	}
}
