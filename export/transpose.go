package export

import "fmt"

// transposeBytes returns data (shape dims, elements of elem bytes)
// permuted so that out.shape[i] = dims[perm[i]].
func transposeBytes(data []byte, dims []int64, perm []int64, elem int) ([]byte, error) {
	rank := len(dims)
	if len(perm) != rank {
		return nil, fmt.Errorf("export: transpose: perm %v for rank %d", perm, rank)
	}
	n := int64(1)
	for _, d := range dims {
		n *= d
	}
	if n*int64(elem) != int64(len(data)) {
		return nil, fmt.Errorf("export: transpose: %d bytes for shape %v", len(data), dims)
	}
	out := make([]byte, len(data))
	if n == 0 {
		return out, nil
	}
	// input strides in elements
	inStride := make([]int64, rank)
	s := int64(1)
	for i := rank - 1; i >= 0; i-- {
		inStride[i] = s
		s *= dims[i]
	}
	outDims := make([]int64, rank)
	step := make([]int64, rank) // input stride of each output axis
	for i, p := range perm {
		outDims[i] = dims[p]
		step[i] = inStride[p]
	}
	idx := make([]int64, rank)
	last := rank - 1
	var src int64
	o := 0
	e := int64(elem)
	for {
		// innermost output axis
		for j := int64(0); j < outDims[last]; j++ {
			off := (src + j*step[last]) * e
			copy(out[o:o+elem], data[off:off+e])
			o += elem
		}
		// odometer over the outer axes
		k := last - 1
		for ; k >= 0; k-- {
			idx[k]++
			src += step[k]
			if idx[k] < outDims[k] {
				break
			}
			src -= idx[k] * step[k]
			idx[k] = 0
		}
		if k < 0 {
			return out, nil
		}
	}
}
