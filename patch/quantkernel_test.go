package patch

import (
	"math"
	"math/rand/v2"
	"testing"
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
