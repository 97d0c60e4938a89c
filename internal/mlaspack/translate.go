package mlaspack

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// Translate maps the sparse entries of an adapter tensor into packed
// coordinates. indices are strictly increasing flat indices into the
// weight as stored; values holds len(indices)·valueSize raw bytes
// (valueSize 2 or 4), one value per index. Translate returns the packed
// element offsets in strictly increasing order and the values permuted the
// same way, in new slices; the inputs are not modified. It panics on
// invalid arguments (a bad valueSize or values length, indices out of
// order or out of range).
//
// It exploits the layout instead of sorting: the cost is O(len(indices) +
// PackedLen/1024) with no comparisons, a few passes over the entries (see
// translateByBlock and translateTrans).
func (l Layout) Translate(indices []uint32, values []byte, valueSize int) (packed []uint32, permuted []byte) {
	if valueSize != 2 && valueSize != 4 {
		panic(fmt.Sprintf("mlaspack: Translate: value size %d, want 2 or 4", valueSize))
	}
	if len(values) != len(indices)*valueSize {
		panic(fmt.Sprintf("mlaspack: Translate: %d value bytes for %d indices of size %d", len(values), len(indices), valueSize))
	}
	l.checkIndices(indices)
	if l.Trans {
		return l.translateTrans(indices, values, valueSize)
	}
	return l.translateByBlock(indices, values, valueSize)
}

func (l Layout) numBlocks() int {
	return (l.K + sliceDepth - 1) / sliceDepth * (l.AlignedN() / panelWidth)
}

// checkIndices panics unless indices are strictly increasing flat indices
// of the weight.
func (l Layout) checkIndices(indices []uint32) {
	for i := 1; i < len(indices); i++ {
		if indices[i] <= indices[i-1] {
			panic(fmt.Sprintf("mlaspack: Translate: indices not strictly increasing at %d (%d after %d)", i, indices[i], indices[i-1]))
		}
	}
	if n := len(indices); n > 0 && int(indices[n-1]) >= l.K*l.N {
		panic(fmt.Sprintf("mlaspack: Translate: index %d out of range [0, %d)", indices[n-1], l.K*l.N))
	}
}

// The hot loops below shift instead of dividing by sliceDepth and
// panelWidth (k and n are never negative).
const (
	sliceShift = 8 // log2(sliceDepth)
	panelShift = 4 // log2(panelWidth)
)

// cursor turns increasing flat indices into (row, column) of the weight
// as stored, dividing only when the row changes.
type cursor struct{ rowLen, row, start int }

func (c *cursor) next(flat int) (row, col int) {
	if d := flat - c.start; d >= c.rowLen {
		q := d / c.rowLen
		c.row += q
		c.start += q * c.rowLen
	}
	return c.row, flat - c.start
}

// packer computes packed offsets from (k, n), the layout's constants
// hoisted.
type packer struct{ sliceLen, lastS0, lastCK int }

func (l Layout) packer() packer {
	lastS0 := (l.K - 1) / sliceDepth * sliceDepth
	return packer{sliceLen: l.AlignedN() * sliceDepth, lastS0: lastS0, lastCK: l.K - lastS0}
}

func (p *packer) offset(k, n int) int {
	ck := sliceDepth
	if k >= p.lastS0 {
		ck = p.lastCK
	}
	return k>>sliceShift*p.sliceLen + n>>panelShift*panelWidth*ck + k&(sliceDepth-1)*panelWidth + n&(panelWidth-1)
}

// blockStarts returns, for each block (slice s, panel p) at
// s·numPanels+p, the number of entries in the blocks before it in packed
// order.
func (l Layout) blockStarts(indices []uint32) []uint32 {
	numPanels := l.AlignedN() / panelWidth
	starts := make([]uint32, l.numBlocks())
	if l.Trans {
		c := cursor{rowLen: l.K}
		for _, idx := range indices {
			n, k := c.next(int(idx))
			starts[k>>sliceShift*numPanels+n>>panelShift]++
		}
	} else {
		c := cursor{rowLen: l.N}
		for _, idx := range indices {
			k, n := c.next(int(idx))
			starts[k>>sliceShift*numPanels+n>>panelShift]++
		}
	}
	var sum uint32
	for b, cnt := range starts {
		starts[b] = sum
		sum += cnt
	}
	return starts
}

func loadValue(values []byte, i, size int) uint32 {
	if size == 4 {
		return binary.LittleEndian.Uint32(values[4*i:])
	}
	return uint32(binary.LittleEndian.Uint16(values[2*i:]))
}

func storeValue(dst []byte, i, size int, v uint32) {
	if size == 4 {
		binary.LittleEndian.PutUint32(dst[4*i:], v)
	} else {
		binary.LittleEndian.PutUint16(dst[2*i:], uint16(v))
	}
}

// translateByBlock is Translate for Trans=false. Flat order is (slice,
// k in slice, panel, column in panel) and packed order is (slice, panel,
// k in slice, column in panel), so a stable counting sort by block
// (slice, panel) puts the entries in packed order: one counting pass, one
// scatter pass.
func (l Layout) translateByBlock(indices []uint32, values []byte, size int) ([]uint32, []byte) {
	numPanels := l.AlignedN() / panelWidth
	starts := l.blockStarts(indices)
	packed := make([]uint32, len(indices))
	permuted := make([]byte, len(values))
	p := l.packer()
	c := cursor{rowLen: l.N}
	for i, idx := range indices {
		k, n := c.next(int(idx))
		b := k>>sliceShift*numPanels + n>>panelShift
		pos := starts[b]
		starts[b]++
		packed[pos] = uint32(p.offset(k, n))
		storeValue(permuted, int(pos), size, loadValue(values, i, size))
	}
	return packed, permuted
}

// translateTrans is Translate for Trans=true. Flat order is (panel,
// column in panel, k) and packed order is (slice, panel, k, column in
// panel), so each panel's entries (16 rows of w, each sorted by k) are
// merged by k: a bitmap of the k's present and a 16-bit mask of the
// columns present at each k give the merge order, column j's entries are
// taken in turn from row j, and they go out sequentially into the panel's
// block in each slice. The bitmap sweep costs K/64 per panel.
func (l Layout) translateTrans(indices []uint32, values []byte, size int) ([]uint32, []byte) {
	numPanels := l.AlignedN() / panelWidth
	starts := l.blockStarts(indices)
	packed := make([]uint32, len(indices))
	permuted := make([]byte, len(values))
	p := l.packer()
	masks := make([]uint16, l.K)           // columns present at k, this panel
	present := make([]uint64, (l.K+63)/64) // k's present, this panel
	var next [panelWidth]int               // next entry of each column
	c := cursor{rowLen: l.K}
	i := 0
	for panel := range numPanels {
		n0 := panel * panelWidth
		limit := min(n0+panelWidth, l.N) * l.K
		last := -1
		for ; i < len(indices) && int(indices[i]) < limit; i++ {
			n, k := c.next(int(indices[i]))
			j := n - n0
			if j != last {
				next[j] = i
				last = j
			}
			present[k>>6] |= 1 << (k & 63)
			masks[k] |= 1 << j
		}
		for wi, word := range present {
			if word == 0 {
				continue
			}
			present[wi] = 0
			for ; word != 0; word &= word - 1 {
				k := wi<<6 + bits.TrailingZeros64(word)
				m := masks[k]
				masks[k] = 0
				b := k>>sliceShift*numPanels + panel
				pos := starts[b]
				base := p.offset(k, n0)
				for ; m != 0; m &= m - 1 {
					j := bits.TrailingZeros16(m)
					packed[pos] = uint32(base + j)
					storeValue(permuted, int(pos), size, loadValue(values, next[j], size))
					next[j]++
					pos++
				}
				starts[b] = pos
			}
		}
	}
	return packed, permuted
}
