package quant

import "fmt"

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
type PackedColumns struct {
	K, N      int
	SliceRows int // a multiple of 4
}

// AlignedN is N rounded up to a multiple of 16.
func (c *PackedColumns) AlignedN() int { return (c.N + 15) &^ 15 }

// Bytes is the number of packed codes (padding included).
func (c *PackedColumns) Bytes() int {
	full := c.K / c.SliceRows
	last := c.K - full*c.SliceRows
	return c.AlignedN() * (full*c.SliceRows + (last+3)&^3)
}

func (c *PackedColumns) validate() error {
	if c.K < 1 || c.N < 1 || c.SliceRows < 4 || c.SliceRows%4 != 0 {
		return fmt.Errorf("%w: packed columns K=%d N=%d slice rows %d", ErrInvalid, c.K, c.N, c.SliceRows)
	}
	return nil
}

// locate returns the slice of packed offset i: its first row k0, its rows
// rounded up to 4 (ckp) and i's offset r inside it.
func (c *PackedColumns) locate(i int) (k0, ckp, r int) {
	sliceBytes := c.AlignedN() * c.SliceRows
	s := i / sliceBytes
	full := c.K / c.SliceRows
	ckp = c.SliceRows
	if s >= full {
		s = full
		ckp = (c.K - full*c.SliceRows + 3) &^ 3
	}
	return s * c.SliceRows, ckp, i - s*sliceBytes
}

// Column returns the column of the code at packed offset i (a padding
// column counts as column N−1, whose parameters it never uses: nothing is
// written there).
func (c *PackedColumns) Column(i int) int {
	_, ckp, r := c.locate(i)
	return min(r/(16*ckp)*16+r%64/4, c.N-1)
}

// PanelStart returns the first column of the 16-column panel holding
// packed offset i.
func (c *PackedColumns) PanelStart(i int) int {
	_, ckp, r := c.locate(i)
	return r / (16 * ckp) * 16
}

// Logical returns the row and column of the code at packed offset i (a
// padding row or column past K or N is returned as it is).
func (c *PackedColumns) Logical(i int) (k, n int) {
	k0, ckp, r := c.locate(i)
	g := r % (16 * ckp)
	return k0 + g/64*4 + g%4, r/(16*ckp)*16 + g%64/4
}
