package quant

import (
	"fmt"
	"math"
	"math/bits"
)

// PackedColumns is the order in which ONNX Runtime's CPU QLinearMatMul
// (MLAS's QGEMM on x86-64) prepacks the int8 codes of a constant [K, N]
// weight, as observed in its buffers: K is cut into slices of SliceRows
// rows (the last may be shorter); a slice holds, for each panel of 16
// columns (N rounded up to AlignedN, the padding columns zero), its rows in
// groups of 4 (the last group zero-padded), each group as 16 columns × 4
// rows: code (k, n) of a slice starting at row k0 with CKP rows (its row
// count rounded up to 4) is at
//
//	AlignedN·k0 + ⌊n/16⌋·16·CKP + ⌊(k−k0)/4⌋·64 + (n mod 16)·4 + (k−k0) mod 4
//
// (package mlaspack packs and translates; this type gives the column of
// an offset, which a per-column scheme needs).
//
// Make one with NewPackedColumns (Scheme.Validate prepares one set by
// hand).
type PackedColumns struct {
	K, N      int
	SliceRows int // a multiple of 4

	// derived (prepare): the slice size in codes, the number of full
	// slices, the last slice's rows rounded up to 4, and divisions by the
	// slice size and by a full and the last slice's panel size
	sliceBytes, full, lastCKP int
	dSlice, dPanel, dLast     fastDiv
}

// NewPackedColumns returns the packed order of a [k, n] weight in slices
// of sliceRows rows.
func NewPackedColumns(k, n, sliceRows int) (*PackedColumns, error) {
	c := &PackedColumns{K: k, N: n, SliceRows: sliceRows}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// fastDiv divides 32-bit numerators by a fixed divisor with one
// multiplication (Lemire, Kaser & Kurz: exact for divisors below 2^32).
type fastDiv struct{ m uint64 } // ceil(2^64 / d); 0 for d = 1

func newFastDiv(d int) fastDiv {
	if d <= 1 {
		return fastDiv{}
	}
	return fastDiv{math.MaxUint64/uint64(d) + 1}
}

func (f fastDiv) div(n int) int {
	if f.m == 0 {
		return n
	}
	q, _ := bits.Mul64(f.m, uint64(n))
	return int(q)
}

// AlignedN is N rounded up to a multiple of 16.
func (c *PackedColumns) AlignedN() int { return (c.N + 15) &^ 15 }

// Bytes is the number of packed codes (padding included).
func (c *PackedColumns) Bytes() int {
	full := c.K / c.SliceRows
	last := c.K - full*c.SliceRows
	return c.AlignedN() * (full*c.SliceRows + (last+3)&^3)
}

// validate checks the dimensions and prepares the derived values; the
// packed codes must fit 32-bit offsets.
func (c *PackedColumns) validate() error {
	if c.K < 1 || c.N < 1 || c.SliceRows < 4 || c.SliceRows%4 != 0 || c.Bytes() > math.MaxUint32 {
		return fmt.Errorf("%w: packed columns K=%d N=%d slice rows %d", ErrInvalid, c.K, c.N, c.SliceRows)
	}
	c.sliceBytes = c.AlignedN() * c.SliceRows
	c.full = c.K / c.SliceRows
	c.lastCKP = (c.K - c.full*c.SliceRows + 3) &^ 3
	c.dSlice, c.dPanel, c.dLast = newFastDiv(c.sliceBytes), newFastDiv(16*c.SliceRows), newFastDiv(16*max(c.lastCKP, 4))
	return nil
}

// locate returns, for packed offset i, its slice's first row k0 and rows
// rounded up to 4 (ckp), its panel and its offset g inside the panel.
func (c *PackedColumns) locate(i int) (k0, ckp, panel, g int) {
	s := c.dSlice.div(i)
	r := i - s*c.sliceBytes
	if s < c.full {
		panel = c.dPanel.div(r)
		return s * c.SliceRows, c.SliceRows, panel, r - panel*16*c.SliceRows
	}
	s = c.full
	r = i - s*c.sliceBytes
	panel = c.dLast.div(r)
	return s * c.SliceRows, c.lastCKP, panel, r - panel*16*c.lastCKP
}

// Column returns the column of the code at packed offset i (a padding
// column counts as column N−1, whose parameters it never uses: nothing is
// written there).
func (c *PackedColumns) Column(i int) int {
	_, _, panel, g := c.locate(i)
	return min(panel*16+g&63>>2, c.N-1)
}

// PanelStart returns the first column of the 16-column panel holding
// packed offset i.
func (c *PackedColumns) PanelStart(i int) int {
	_, _, panel, _ := c.locate(i)
	return panel * 16
}

// Logical returns the row and column of the code at packed offset i (a
// padding row or column past K or N is returned as it is).
func (c *PackedColumns) Logical(i int) (k, n int) {
	k0, _, panel, g := c.locate(i)
	return k0 + g>>6*4 + g&3, panel*16 + g&63>>2
}
