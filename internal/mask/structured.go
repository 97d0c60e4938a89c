package mask

import "fmt"

// Struct returns the structured SHiRA mask of a 2-D weight of shape
// [rows, cols]: every stride-th row, every stride-th column and the main
// diagonal, sorted.
func Struct(rows, cols, stride int) ([]uint32, error) {
	if rows < 0 || cols < 0 || stride < 1 {
		return nil, fmt.Errorf("%w: Struct(%d, %d, stride %d)", ErrArg, rows, cols, stride)
	}
	if err := checkK(rows*cols, 0); err != nil || (cols > 0 && rows > MaxElements/cols) {
		return nil, fmt.Errorf("%w: %dx%d is too large", ErrArg, rows, cols)
	}
	var out []uint32
	for r := range rows {
		base := uint32(r * cols)
		if r%stride == 0 {
			for c := range cols {
				out = append(out, base+uint32(c))
			}
			continue
		}
		diag := r >= cols || r%stride == 0 // no diagonal entry, or on a strided column
		for c := 0; c < cols; c += stride {
			if !diag && r < c {
				out = append(out, base+uint32(r))
				diag = true
			}
			out = append(out, base+uint32(c))
		}
		if !diag {
			out = append(out, base+uint32(r))
		}
	}
	return out, nil
}
