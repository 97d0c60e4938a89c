package quant

import "fmt"

// NBitsZeroPointBytes returns the byte length of MatMulNBits' packed uint8
// zero points: N·ceil(k_blocks·bits/8) (each column padded to whole bytes).
func NBitsZeroPointBytes(n, kBlocks, bits int) int { return n * ceilDiv(kBlocks*bits, 8) }

// UnpackNBitsZeroPoints unpacks MatMulNBits' packed uint8 zero points
// (NBitsZeroPointBytes(n, kBlocks, bits) bytes; within a byte, low bits
// first) into one int32 per block, index n·kBlocks + kb.
func UnpackNBitsZeroPoints(packed []byte, n, kBlocks, bits int) ([]int32, error) {
	if !validNBits(bits) || n <= 0 || kBlocks <= 0 {
		return nil, fmt.Errorf("%w: zero points for N=%d k_blocks=%d bits=%d", ErrInvalid, n, kBlocks, bits)
	}
	row := ceilDiv(kBlocks*bits, 8)
	if len(packed) != n*row {
		return nil, fmt.Errorf("%w: %d packed zero-point bytes, want N·ceil(k_blocks·bits/8) = %d", ErrInvalid, len(packed), n*row)
	}
	mask := byte(1<<bits - 1)
	out := make([]int32, n*kBlocks)
	for c := 0; c < n; c++ {
		for kb := 0; kb < kBlocks; kb++ {
			bit := kb * bits
			out[c*kBlocks+kb] = int32(packed[c*row+bit>>3] >> (bit & 7) & mask)
		}
	}
	return out, nil
}

// PackNBitsZeroPoints is the inverse of UnpackNBitsZeroPoints: zp holds
// n·kBlocks zero points in [0, 2^bits); padding bits are zero.
func PackNBitsZeroPoints(zp []int32, n, kBlocks, bits int) ([]byte, error) {
	if !validNBits(bits) || n <= 0 || kBlocks <= 0 || len(zp) != n*kBlocks {
		return nil, fmt.Errorf("%w: %d zero points for N=%d k_blocks=%d bits=%d", ErrInvalid, len(zp), n, kBlocks, bits)
	}
	row := ceilDiv(kBlocks*bits, 8)
	out := make([]byte, n*row)
	for c := 0; c < n; c++ {
		for kb := 0; kb < kBlocks; kb++ {
			z := zp[c*kBlocks+kb]
			if z < 0 || z >= 1<<bits {
				return nil, fmt.Errorf("%w: zero point[%d] = %d outside [0, %d]", ErrInvalid, c*kBlocks+kb, z, 1<<bits-1)
			}
			bit := kb * bits
			out[c*row+bit>>3] |= byte(z) << (bit & 7)
		}
	}
	return out, nil
}
