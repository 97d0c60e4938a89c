// Package mlaspack knows where ONNX Runtime's CPU SGEMM kernels put each
// element of a constant fp32 weight after prepacking it. This is MLAS's
// packed-B buffer for SGEMM on x86-64, as observed in real buffers (the
// layout is described here from those observations; no ORT code is used).
//
// The weight is the GEMM operand B, logically K×N (row k, column n). The
// packed buffer holds AlignedN·K float32 elements and nothing else, where
// AlignedN is N rounded up to a multiple of 16:
//
//   - K is cut into slices of 256 rows; slice s holds rows
//     [256s, 256s+CK) with CK = min(256, K−256s) (only the last slice can
//     be shorter than 256) in the AlignedN·CK elements starting at
//     AlignedN·256·s.
//   - Inside a slice, the columns are cut into panels of 16; panel p holds
//     columns [16p, 16p+16) as a CK×16 row-major block of 16·CK elements
//     starting at 16·CK·p.
//
// So element (k, n) is at
//
//	AlignedN·256·⌊k/256⌋ + 16·CK·⌊n/16⌋ + 16·(k mod 256) + n mod 16
//
// and the padding columns n ∈ [N, AlignedN) hold zeros.
//
// The model stores the weight W in one of two orientations (see
// [Layout.Trans]): as B itself ([K, N], MatMul's B) or transposed ([N, K],
// Gemm with transB=1, or a Transpose that ORT folded into the constant).
// Layout maps flat row-major indices of W as stored to packed offsets
// ([Layout.Offset], [Layout.Index]), packs a weight ([Layout.Pack]), checks
// a candidate buffer against a weight without copying it
// ([Layout.Matches]), and translates the sorted sparse entries of an
// adapter into packed order ([Layout.Translate]).
package mlaspack

import (
	"fmt"
	"math"
)

const (
	panelWidth = 16  // columns per panel
	sliceDepth = 256 // rows of K per slice

	// maxPacked bounds the packed buffer so every element offset fits in a uint32.
	maxPacked = 1 << 32
)

// Layout is how one weight tensor sits in an MLAS packed SGEMM B buffer.
// Make one with [NewLayout] (or set K, N ≥ 1 within its limits). It is a
// plain value: its methods are safe for concurrent use.
type Layout struct {
	// K and N are the GEMM dimensions: B is K×N.
	K, N int
	// Trans tells how the weight W is stored: false means W is B ([K, N],
	// B[k][n] at flat index k·N+n); true means W is Bᵀ ([N, K], B[k][n] =
	// W[n][k] at flat index n·K+k).
	Trans bool
}

// NewLayout returns the layout of a weight stored with the given shape
// (rank 2, every dimension at least 1): [K, N] when trans is false, [N, K]
// when trans is true. It fails when the packed buffer would be too large
// for uint32 element offsets or for int byte counts.
func NewLayout(shape []int64, trans bool) (Layout, error) {
	if len(shape) != 2 {
		return Layout{}, fmt.Errorf("mlaspack: weight shape %v: want rank 2", shape)
	}
	for _, d := range shape {
		if d < 1 {
			return Layout{}, fmt.Errorf("mlaspack: weight shape %v: dimensions must be at least 1", shape)
		}
		if d > min(maxPacked, math.MaxInt) {
			return Layout{}, fmt.Errorf("mlaspack: weight shape %v: too large", shape)
		}
	}
	l := Layout{K: int(shape[0]), N: int(shape[1]), Trans: trans}
	if trans {
		l.K, l.N = l.N, l.K
	}
	an := uint64(l.AlignedN())
	if uint64(l.K) > maxPacked/an || uint64(l.K)*an > math.MaxInt/4 {
		return Layout{}, fmt.Errorf("mlaspack: weight shape %v: packed buffer of %d×%d elements exceeds uint32 offsets", shape, l.K, an)
	}
	return l, nil
}

// AlignedN is N rounded up to a multiple of 16: the packed row length.
func (l Layout) AlignedN() int { return (l.N + panelWidth - 1) &^ (panelWidth - 1) }

// PackedLen is the length of the packed buffer in float32 elements.
func (l Layout) PackedLen() int { return l.AlignedN() * l.K }

// PackedBytes is the length of the packed buffer in bytes.
func (l Layout) PackedBytes() int { return 4 * l.PackedLen() }

// Offset returns the packed element offset of the weight's element at
// flat (row-major, as stored) index flat. It panics if flat is out of
// range.
func (l Layout) Offset(flat int) int {
	if flat < 0 || flat >= l.K*l.N {
		panic(fmt.Sprintf("mlaspack: flat index %d out of range [0, %d)", flat, l.K*l.N))
	}
	if l.Trans {
		return l.offset(flat%l.K, flat/l.K)
	}
	return l.offset(flat/l.N, flat%l.N)
}

// offset is the packed element offset of B[k][n].
func (l Layout) offset(k, n int) int {
	s := k / sliceDepth
	ck := min(sliceDepth, l.K-s*sliceDepth)
	return s*l.AlignedN()*sliceDepth + n/panelWidth*panelWidth*ck + k%sliceDepth*panelWidth + n%panelWidth
}

// Index is the inverse of [Layout.Offset]: the flat index of the weight
// element at packed element offset off. ok is false when off is padding or
// outside the buffer.
func (l Layout) Index(off int) (flat int, ok bool) {
	if off < 0 || off >= l.PackedLen() {
		return 0, false
	}
	sliceLen := l.AlignedN() * sliceDepth
	s, r := off/sliceLen, off%sliceLen
	ck := min(sliceDepth, l.K-s*sliceDepth)
	p, r := r/(panelWidth*ck), r%(panelWidth*ck)
	k := s*sliceDepth + r/panelWidth
	n := p*panelWidth + r%panelWidth
	if n >= l.N {
		return 0, false
	}
	if l.Trans {
		return n*l.K + k, true
	}
	return k*l.N + n, true
}

// Pack writes the packed form of w (the weight as stored, in l's
// orientation) into dst, padding included. It panics unless len(w) is K·N
// and len(dst) is [Layout.PackedLen]. Elements are copied bit for bit.
func (l Layout) Pack(dst, w []float32) {
	if len(w) != l.K*l.N || len(dst) != l.PackedLen() {
		panic(fmt.Sprintf("mlaspack: Pack: len(w)=%d, len(dst)=%d; want %d, %d", len(w), len(dst), l.K*l.N, l.PackedLen()))
	}
	an := l.AlignedN()
	for s0 := 0; s0 < l.K; s0 += sliceDepth {
		ck := min(sliceDepth, l.K-s0)
		for n0 := 0; n0 < an; n0 += panelWidth {
			blk := dst[s0*an+n0*ck : s0*an+(n0+panelWidth)*ck]
			width := min(panelWidth, l.N-n0)
			for kk := range ck {
				row := blk[kk*panelWidth : (kk+1)*panelWidth]
				k := s0 + kk
				if l.Trans {
					for j := range width {
						row[j] = w[(n0+j)*l.K+k]
					}
				} else {
					copy(row, w[k*l.N+n0:k*l.N+n0+width])
				}
				clear(row[width:])
			}
		}
	}
}
