package mlaspack

import (
	"fmt"
	"math"
)

// NBitsLayout is how ONNX Runtime's CPU MatMulNBits kernel prepacks a
// constant 4-bit B for float32 compute (accuracy_level 0 to 3 on x86-64),
// as observed in real buffers (no ORT code is used).
//
// MatMulNBits stores B as [N][k_blocks][blob]: column n's codes, block by
// block along K, each block of BlockSize codes in BlockSize/2 bytes, code
// j of a block in byte j/2 (low nibble for even j). The packed buffer has
// the same size and the same blocks in the same places; only the codes
// inside a block move: the block is cut into sub-blocks of S = min(64,
// BlockSize) codes, and byte b of a sub-block holds its codes b (low
// nibble) and b + S/2 (high nibble). Scales and zero points are not part
// of the buffer (ORT keeps reading them from their initializers).
//
// So a packed buffer is again a MatMulNBits storage, of the same scheme
// with K rounded up to whole blocks (Padded), in which logical row k of a
// block sits at row Row(k): a row permutation inside each block. Patching
// the packed buffer is patching that storage at the permuted rows
// (Translate), with the weight's own scales and zero points.
type NBitsLayout struct {
	// K and N are B's logical dimensions, BlockSize its block_size (a
	// power of two from 16).
	K, N, BlockSize int
}

// NewNBitsLayout returns the packed layout of a MatMulNBits B with the
// given attributes, or an error when ORT is not known to pack it so (bits
// other than 4) or the packed storage exceeds 4 Gi codes.
func NewNBitsLayout(k, n, bits, blockSize int) (NBitsLayout, error) {
	if bits != 4 {
		return NBitsLayout{}, fmt.Errorf("mlaspack: a %d-bit MatMulNBits weight is not prepacked by ONNX Runtime for float32 compute (only 4-bit is)", bits)
	}
	if k < 1 || n < 1 || blockSize < 16 || blockSize&(blockSize-1) != 0 {
		return NBitsLayout{}, fmt.Errorf("mlaspack: MatMulNBits K=%d N=%d block_size=%d", k, n, blockSize)
	}
	l := NBitsLayout{K: k, N: n, BlockSize: blockSize}
	if uint64(l.Padded())*uint64(n) > math.MaxUint32 {
		return NBitsLayout{}, fmt.Errorf("mlaspack: MatMulNBits %d×%d has more codes than 32-bit indices address", k, n)
	}
	return l, nil
}

// Padded is K rounded up to whole blocks: the rows of the packed storage.
func (l NBitsLayout) Padded() int { return (l.K + l.BlockSize - 1) / l.BlockSize * l.BlockSize }

// PackedBytes is the size of the packed buffer (and of B).
func (l NBitsLayout) PackedBytes() int { return l.N * l.Padded() / 2 }

func (l NBitsLayout) sub() int { return min(64, l.BlockSize) }

// Row returns the row of the packed storage that holds logical row k
// (also for the padding rows K ≤ k < Padded).
func (l NBitsLayout) Row(k int) int {
	s := l.sub()
	h := s / 2
	r := k % s
	return k - r + 2*(r%h) + r/h
}

// Pack writes into dst (PackedBytes long) the packed form of the codes
// of B as MatMulNBits stores it (src, PackedBytes long).
func (l NBitsLayout) Pack(dst, src []byte) {
	s := l.sub()
	h := s / 2
	for base := 0; base+h <= len(src); base += h {
		sb := src[base : base+h] // one sub-block: codes 2j, 2j+1 in byte j
		db := dst[base : base+h]
		for b := range h {
			lo := nibble(sb, b)
			hi := nibble(sb, b+h)
			db[b] = lo | hi<<4
		}
	}
}

// nibble returns code j of the sub-block b (code j in byte j/2).
func nibble(b []byte, j int) byte { return b[j/2] >> (4 * (j & 1)) & 15 }

// Matches reports whether buf is the packed form of src (both
// PackedBytes long).
func (l NBitsLayout) Matches(buf, src []byte) bool {
	if len(buf) != l.PackedBytes() || len(src) != l.PackedBytes() {
		return false
	}
	s := l.sub()
	h := s / 2
	for base := 0; base < len(src); base += h {
		sb, db := src[base:base+h], buf[base:base+h]
		for b := range h {
			if db[b] != nibble(sb, b)|nibble(sb, b+h)<<4 {
				return false
			}
		}
	}
	return true
}

// Translate maps the sorted flat indices of an adapter tensor over the
// logical [K, N] weight to sorted flat indices over the packed storage's
// [Padded, N] (k·N + n goes to Row(k)·N + n), with the values (valueSize
// bytes each) permuted alike. Each block's rows are permuted among
// themselves, so the entries of a row move together: linear time.
func (l NBitsLayout) Translate(indices []uint32, values []byte, valueSize int) ([]uint32, []byte) {
	out := make([]uint32, len(indices))
	vals := make([]byte, len(values))
	n := uint32(l.N)
	bs := l.BlockSize
	// rowStart[r] is the first entry at or after row r of the current block
	rowStart := make([]int, bs+1)
	w := 0
	for e := 0; e < len(indices); {
		k0 := int(indices[e]/n) / bs * bs // the block's first row
		end := e
		for r := range bs {
			for end < len(indices) && int(indices[end]/n) < k0+r {
				end++
			}
			rowStart[r] = end
		}
		for end < len(indices) && int(indices[end]/n) < k0+bs {
			end++
		}
		rowStart[bs] = end
		// the target rows in order: row t of the block receives the source
		// row whose Row is t
		for t := range bs {
			src := inverseRow(l, k0, t)
			if src < 0 {
				continue
			}
			a, b := rowStart[src-k0], rowStart[src-k0+1]
			for j := a; j < b; j++ {
				out[w] = indices[j] + uint32(t+k0-src)*n
				copy(vals[w*valueSize:(w+1)*valueSize], values[j*valueSize:(j+1)*valueSize])
				w++
			}
		}
		e = end
	}
	return out, vals
}

// inverseRow returns the logical row (in the block starting at k0) that
// Row places at row k0+t, or -1 when it is a padding row past K.
func inverseRow(l NBitsLayout, k0, t int) int {
	s := l.sub()
	h := s / 2
	r := t % s
	// Row maps r = a + h·c (a < h, c ∈ {0, 1}) to 2a + c
	src := k0 + t - r + r/2 + h*(r&1)
	if src >= l.K {
		return -1
	}
	return src
}
