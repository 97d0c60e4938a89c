// Package mask chooses which entries of a weight tensor an adapter
// touches. Every function returns flat row-major indices as a sorted,
// strictly increasing []uint32, the form adapter.Tensor stores, and is
// deterministic for a given input (and seed).
package mask

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
)

// ErrArg is wrapped by errors about invalid arguments.
var ErrArg = errors.New("mask: invalid argument")

// MaxElements is the largest tensor a mask can index (uint32 indices).
const MaxElements = 1 << 32

// Count returns the number of entries to touch for a density: round(density
// * numel), at least 1 and at most numel (0 when numel <= 0). A NaN or
// negative density counts as 0, one above 1 as 1.
func Count(numel int, density float64) int {
	if numel <= 0 {
		return 0
	}
	if !(density > 0) {
		density = 0
	}
	if density > 1 {
		density = 1
	}
	k := int(math.Round(density * float64(numel)))
	return min(max(k, 1), numel)
}

func checkK(numel, k int) error {
	if numel < 0 || numel > MaxElements {
		return fmt.Errorf("%w: %d elements (want 0..2^32)", ErrArg, numel)
	}
	if k < 0 || k > numel {
		return fmt.Errorf("%w: k=%d for %d elements", ErrArg, k, numel)
	}
	return nil
}

// Random returns k distinct indices in [0, numel) drawn uniformly without
// replacement from rng (every k-subset is equally likely), sorted.
//
// It draws uniform indices until k distinct ones have been seen, which is
// uniform by symmetry; a bitmap keeps it O(numel/64 + k) when k is a
// sizeable fraction of numel, and a sort of the draws otherwise. For
// k > numel/2 it draws the complement instead.
func Random(numel, k int, rng *rand.Rand) ([]uint32, error) {
	if err := checkK(numel, k); err != nil {
		return nil, err
	}
	if rng == nil {
		return nil, fmt.Errorf("%w: nil rng", ErrArg)
	}
	if k == 0 {
		return []uint32{}, nil
	}
	if k == numel {
		return iota(numel), nil
	}
	complement := k > numel/2
	draw := k
	if complement {
		draw = numel - k
	}
	// Bitmap when scanning numel/64 words costs no more than sorting draw
	// values would; sorted draws otherwise (tiny densities, huge tensors).
	if numel/64 <= 8*draw {
		return randomBitmap(numel, draw, complement, k, rng), nil
	}
	return randomSorted(numel, draw, rng), nil // complement implies draw > numel/128
}

func iota(n int) []uint32 {
	out := make([]uint32, n)
	for i := range out {
		out[i] = uint32(i)
	}
	return out
}

func randomBitmap(numel, draw int, complement bool, k int, rng *rand.Rand) []uint32 {
	words := make([]uint64, (numel+63)/64)
	for have := 0; have < draw; {
		i := rng.Uint64N(uint64(numel))
		w, b := i/64, uint64(1)<<(i%64)
		if words[w]&b == 0 {
			words[w] |= b
			have++
		}
	}
	out := make([]uint32, 0, k)
	for w, x := range words {
		if complement {
			x = ^x
			if rem := numel - 64*w; rem < 64 {
				x &= 1<<rem - 1
			}
		}
		for x != 0 {
			out = append(out, uint32(64*w+bits.TrailingZeros64(x)))
			x &= x - 1
		}
	}
	return out
}

func randomSorted(numel, k int, rng *rand.Rand) []uint32 {
	out := make([]uint32, 0, k)
	for len(out) < k {
		need := k - len(out)
		start := len(out)
		for range need {
			out = append(out, uint32(rng.Uint64N(uint64(numel))))
		}
		slices.Sort(out[start:])
		out = mergeUnique(out, start)
	}
	return out
}

// mergeUnique merges the sorted runs out[:mid] and out[mid:] into one
// sorted run without duplicates.
func mergeUnique(out []uint32, mid int) []uint32 {
	if mid == 0 {
		return slices.Compact(out)
	}
	a := slices.Clone(out[:mid])
	b := out[mid:]
	res := out[:0]
	i, j := 0, 0
	push := func(v uint32) {
		if len(res) == 0 || res[len(res)-1] != v {
			res = append(res, v)
		}
	}
	// res never overtakes b's unread part: len(res) <= i+j <= mid+j.
	for i < len(a) && j < len(b) {
		if a[i] <= b[j] {
			push(a[i])
			i++
		} else {
			push(b[j])
			j++
		}
	}
	for ; i < len(a); i++ {
		push(a[i])
	}
	for ; j < len(b); j++ {
		push(b[j])
	}
	return res
}
