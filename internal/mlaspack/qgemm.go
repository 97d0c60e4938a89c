package mlaspack

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/shira-ort/shira-ort/internal/quant"
)

// QGemmSliceRows is the height of the K slices of a packed QGEMM B
// (observed on x86-64 with ORT 1.24 and 1.30).
const QGemmSliceRows = 384

// QGemmLayout is how ONNX Runtime's CPU QLinearMatMul prepacks a constant
// 8-bit B (K×N codes, as stored: [K, N]) on x86-64, as observed in real
// buffers (no ORT code is used): N int32 column sums first (AlignedN of
// them, the padding ones zero), then the codes in quant.PackedColumns
// order (slices of QGemmSliceRows rows, 16-column panels, groups of 4
// rows), zero-padded. Column n's sum is the sum over k of its codes as
// signed bytes. Unsigned (uint8) codes are stored with their top bit
// flipped (q − 128 as int8), and summed so.
type QGemmLayout struct {
	K, N     int
	Unsigned bool
	cols     *quant.PackedColumns
}

// NewQGemmLayout returns the layout of a [k, n] weight of 8-bit codes
// (unsigned for uint8), or an error when it does not fit 32-bit offsets.
// Use it, not a literal: the layout carries its prepared column order.
func NewQGemmLayout(k, n int, unsigned bool) (QGemmLayout, error) {
	cols, err := quant.NewPackedColumns(k, n, QGemmSliceRows)
	if err != nil {
		return QGemmLayout{}, fmt.Errorf("mlaspack: QGEMM weight %d×%d: %w", k, n, err)
	}
	return QGemmLayout{K: k, N: n, Unsigned: unsigned, cols: cols}, nil
}

// Columns is the order of the codes after the column sums (shared: read
// only).
func (l QGemmLayout) Columns() *quant.PackedColumns { return l.cols }

// SumsBytes is the size of the column sums at the start of the buffer.
func (l QGemmLayout) SumsBytes() int { return 4 * l.Columns().AlignedN() }

// PackedBytes is the size of the whole buffer.
func (l QGemmLayout) PackedBytes() int { return l.SumsBytes() + l.Columns().Bytes() }

// Offset returns where code (k, n) is among the packed codes (after the
// column sums).
func (l QGemmLayout) Offset(k, n int) int {
	an := (l.N + 15) &^ 15
	k0 := k / QGemmSliceRows * QGemmSliceRows
	ckp := (min(QGemmSliceRows, l.K-k0) + 3) &^ 3
	r := k - k0
	return an*k0 + n/16*16*ckp + r/4*64 + n%16*4 + r%4
}

// Pack writes into dst (PackedBytes long) the packed form of the codes w
// ([K, N], one byte each).
func (l QGemmLayout) Pack(dst, w []byte) {
	clear(dst)
	codes := dst[l.SumsBytes():]
	flip := l.flip()
	for k := range l.K {
		row := w[k*l.N : (k+1)*l.N]
		for n, q := range row {
			codes[l.Offset(k, n)] = q ^ flip
		}
	}
	l.SumColumns(dst)
}

func (l QGemmLayout) flip() byte {
	if l.Unsigned {
		return 0x80
	}
	return 0
}

// SumColumns recomputes the column sums of buf (PackedBytes long) from its
// codes, in one pass over them.
func (l QGemmLayout) SumColumns(buf []byte) {
	c := l.Columns()
	sums := make([]int32, c.AlignedN())
	codes := buf[l.SumsBytes():]
	// every run of 64 codes is 16 columns × 4 rows of one panel
	for off := 0; off+64 <= len(codes); off += 64 {
		col := c.PanelStart(off)
		g := codes[off : off+64]
		for j := range 16 {
			sums[col+j] += int32(int8(g[4*j])) + int32(int8(g[4*j+1])) + int32(int8(g[4*j+2])) + int32(int8(g[4*j+3]))
		}
	}
	l.WriteSums(buf, sums)
}

// ReadSums returns the column sums stored in buf (AlignedN of them).
func (l QGemmLayout) ReadSums(buf []byte) []int32 {
	sums := make([]int32, l.SumsBytes()/4)
	for n := range sums {
		sums[n] = int32(binary.LittleEndian.Uint32(buf[4*n:]))
	}
	return sums
}

// WriteSums stores the column sums sums (AlignedN of them) into buf.
func (l QGemmLayout) WriteSums(buf []byte, sums []int32) {
	for n, v := range sums {
		binary.LittleEndian.PutUint32(buf[4*n:], uint32(v))
	}
}

// Matches reports whether buf is the packed form of the codes w.
func (l QGemmLayout) Matches(buf, w []byte) bool {
	if len(buf) != l.PackedBytes() || len(w) != l.K*l.N {
		return false
	}
	want := make([]byte, len(buf))
	l.Pack(want, w)
	return slices.Equal(buf, want)
}

// Translate maps the sorted flat indices k·N + n of an adapter tensor
// over the [K, N] weight to sorted offsets among the packed codes, with
// the values (valueSize bytes each) permuted alike.
func (l QGemmLayout) Translate(indices []uint32, values []byte, valueSize int) ([]uint32, []byte) {
	keys := make([]uint64, len(indices)) // offset << 32 | entry
	n := uint32(l.N)
	for j, i := range indices {
		keys[j] = uint64(l.Offset(int(i/n), int(i%n)))<<32 | uint64(j)
	}
	radixSortHigh(keys)
	out := make([]uint32, len(keys))
	vals := make([]byte, len(values))
	for w, key := range keys {
		j := int(uint32(key))
		out[w] = uint32(key >> 32)
		copy(vals[w*valueSize:(w+1)*valueSize], values[j*valueSize:(j+1)*valueSize])
	}
	return out, vals
}

// radixSortHigh sorts keys by their high 32 bits (two stable passes of 16
// bits; a comparison sort for short inputs).
func radixSortHigh(keys []uint64) {
	if len(keys) < 1<<12 {
		slices.SortFunc(keys, func(a, b uint64) int { return cmp.Compare(a>>32, b>>32) })
		return
	}
	tmp := make([]uint64, len(keys))
	src, dst := keys, tmp
	for shift := uint(32); shift < 64; shift += 16 {
		var count [1 << 16]int
		for _, k := range src {
			count[k>>shift&0xffff]++
		}
		pos := 0
		for d, c := range count {
			count[d] = pos
			pos += c
		}
		for _, k := range src {
			d := k >> shift & 0xffff
			dst[count[d]] = k
			count[d]++
		}
		src, dst = dst, src
	}
	// two passes: the sorted keys are back in keys
}
