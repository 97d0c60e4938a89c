package mask

import (
	"fmt"

	"github.com/shira-ort/shira-ort/tensor"
)

// WeightMagnitude returns the indices of the k entries of w with the
// largest magnitude |w|, ties broken by lower index, sorted by index. NaN
// counts as magnitude 0. w must be float32, float16 or bfloat16.
//
// It runs a radix selection (histograms of the magnitude bits) instead of a
// sort: two or three linear passes and no per-element allocation.
func WeightMagnitude(w *tensor.Tensor, k int) ([]uint32, error) {
	if w == nil {
		return nil, fmt.Errorf("%w: nil tensor", ErrArg)
	}
	numel, err := tensor.NumElements(w.Shape)
	if err != nil {
		return nil, fmt.Errorf("mask: %w", err)
	}
	if numel*w.DType.Size() != len(w.Data) {
		return nil, fmt.Errorf("%w: %v %v with %d bytes", ErrArg, w.DType, w.Shape, len(w.Data))
	}
	if err := checkK(numel, k); err != nil {
		return nil, err
	}
	switch w.DType {
	case tensor.Float32:
		return topK(tensor.Uint32s(w.Data), 0x7fffffff, 0x7f800000, 16, k), nil
	case tensor.Float16:
		return topK(tensor.Uint16s(w.Data), 0x7fff, 0x7c00, 0, k), nil
	case tensor.BFloat16:
		return topK(tensor.Uint16s(w.Data), 0x7fff, 0x7f80, 0, k), nil
	}
	return nil, fmt.Errorf("%w: dtype %v (want float32, float16 or bfloat16)", ErrArg, w.DType)
}

// topK selects by the key x&absMask (0 for NaN, i.e. above inf), which
// orders like the magnitude. hiShift splits 32-bit keys into two 16-bit
// histogram levels; 0 means a single level.
func topK[T uint16 | uint32](x []T, absMask, inf T, hiShift uint, k int) []uint32 {
	out := make([]uint32, 0, k)
	if k == 0 {
		return out
	}
	key := func(v T) T {
		v &= absMask
		if v > inf {
			return 0
		}
		return v
	}
	// Level 1: the high bucket holding the k-th largest key.
	var hist [1 << 16]int
	for _, v := range x {
		hist[key(v)>>hiShift]++
	}
	need := k // how many we still need at or below the current bucket
	hi := len(hist) - 1
	for ; hi > 0 && hist[hi] < need; hi-- {
		need -= hist[hi]
	}
	// Level 2 (32-bit keys): the exact threshold within that bucket.
	thr := T(hi) << hiShift
	if hiShift > 0 {
		hist = [1 << 16]int{}
		for _, v := range x {
			if kv := key(v); kv>>hiShift == T(hi) {
				hist[kv&(1<<hiShift-1)]++
			}
		}
		lo := len(hist) - 1
		for ; lo > 0 && hist[lo] < need; lo-- {
			need -= hist[lo]
		}
		thr |= T(lo)
	}
	// Everything above thr, plus the first `need` entries equal to thr.
	for i, v := range x {
		kv := key(v)
		if kv > thr {
			out = append(out, uint32(i))
		} else if kv == thr && need > 0 {
			out = append(out, uint32(i))
			need--
		}
	}
	return out
}
