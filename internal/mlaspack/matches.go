package mlaspack

import (
	"bytes"
	"encoding/binary"
	"unsafe"
)

// Matches reports whether buf (the raw little-endian bytes of a candidate
// packed buffer) is exactly the packed form of w (the raw little-endian
// float32 bytes of the weight as stored), padding zeros included. The
// comparison is bitwise: -0 differs from +0 and NaNs must have the same
// payload. Matches is false when either length is wrong.
//
// It streams over both buffers block by block (one 16-column panel of one
// 256-row slice at a time) without copying either.
func (l Layout) Matches(buf, w []byte) bool {
	if len(buf) != l.PackedBytes() || len(w) != 4*l.K*l.N {
		return false
	}
	if l.Trans {
		return l.matchesTrans(buf, w)
	}
	return l.matchesPlain(buf, w)
}

// matchesPlain is Matches for Trans=false: each packed row of a panel is a
// contiguous 16-element run of a row of w.
func (l Layout) matchesPlain(buf, w []byte) bool {
	an := l.AlignedN()
	const rowBytes = 4 * panelWidth
	for s0 := 0; s0 < l.K; s0 += sliceDepth {
		ck := min(sliceDepth, l.K-s0)
		for n0 := 0; n0 < an; n0 += panelWidth {
			blk := buf[4*(s0*an+n0*ck) : 4*(s0*an+(n0+panelWidth)*ck)]
			width := 4 * min(panelWidth, l.N-n0)
			src := w[4*(s0*l.N+n0):]
			for kk := range ck {
				row := blk[kk*rowBytes : (kk+1)*rowBytes]
				if !bytes.Equal(row[:width], src[4*kk*l.N:4*kk*l.N+width]) {
					return false
				}
				if width < rowBytes && !allZero(row[width:]) {
					return false
				}
			}
		}
	}
	return true
}

// matchesTrans is Matches for Trans=true: a packed block is the transpose
// of 16 runs of CK elements, one from each of 16 consecutive rows of w.
// Panels go outermost so that w is read as 16 sequential streams.
func (l Layout) matchesTrans(buf, w []byte) bool {
	an := l.AlignedN()
	buf64, w64 := uint64s(buf), uint64s(w)
	fast := buf64 != nil && w64 != nil && l.K%2 == 0
	for n0 := 0; n0 < an; n0 += panelWidth {
		for s0 := 0; s0 < l.K; s0 += sliceDepth {
			ck := min(sliceDepth, l.K-s0)
			off := s0*an + n0*ck // of the block, in elements
			var ok bool
			if fast && n0+panelWidth <= l.N {
				ok = transBlock64(buf64[off/2:(off+panelWidth*ck)/2], w64[(n0*l.K+s0)/2:], l.K/2, ck/2)
			} else {
				ok = l.transBlock(buf[4*off:4*(off+panelWidth*ck)], w, n0, s0, ck)
			}
			if !ok {
				return false
			}
		}
	}
	return true
}

// transBlock64 compares a full block (16 columns, ck = 2·pairs rows) two
// rows and two columns at a time: a and c hold rows k, k+1 of columns j
// and j+1 of w, which are the low and high halves of the two words of the
// block at (k, j) and (k+1, j). w's rows are stride words apart. Only for
// little-endian memory with the rows and block 8-byte aligned.
func transBlock64(blk, w []uint64, stride, pairs int) bool {
	var x uint64
	for j := 0; j < panelWidth; j += 2 {
		ra := w[j*stride : j*stride+pairs]
		rc := w[(j+1)*stride : (j+1)*stride+pairs]
		bj := blk[j/2:]
		for i, a := range ra {
			c := rc[i]
			x |= (a&0xffffffff | c<<32) ^ bj[16*i]
			x |= (a>>32 | c&^0xffffffff) ^ bj[16*i+8]
		}
	}
	return x == 0
}

// transBlock compares one block element by element (any alignment,
// partial panels, odd K): column j of the block is row n0+j of w, or zero.
func (l Layout) transBlock(blk, w []byte, n0, s0, ck int) bool {
	for j := range panelWidth {
		col := blk[4*j:]
		var x uint32
		if n := n0 + j; n < l.N {
			src := w[4*(n*l.K+s0) : 4*(n*l.K+s0+ck)]
			for kk := range ck {
				x |= binary.LittleEndian.Uint32(src[4*kk:]) ^ binary.LittleEndian.Uint32(col[4*panelWidth*kk:])
			}
		} else {
			for kk := range ck {
				x |= binary.LittleEndian.Uint32(col[4*panelWidth*kk:])
			}
		}
		if x != 0 {
			return false
		}
	}
	return true
}

// littleEndian is whether uint64s' words hold the lower-addressed float32
// in their low half, as transBlock64 assumes.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// uint64s views b as words, or returns nil when the view would be
// misaligned, b's length is not a multiple of 8, or memory is big-endian.
func uint64s(b []byte) []uint64 {
	if !littleEndian || len(b) == 0 || len(b)%8 != 0 || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%8 != 0 {
		return nil
	}
	return unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/8)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
