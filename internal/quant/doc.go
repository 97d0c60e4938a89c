// Package quant is the arithmetic for patching SHiRA adapters into
// QUANTIZED weights in place: reading and writing single integer codes in
// their storage, dequantizing and requantizing them, and the batch loops
// (ApplyOverwrite, ApplyDelta, Restore) the patcher runs over an adapter's
// sorted flat indices, with statistics on how much of the intended change
// survived requantization ([Survival]).
//
// A [Scheme] describes one quantized weight in one of two storage forms:
//
//   - [KindQDQ]: an integer initializer of codes q (int8, uint8, int16 or
//     uint16, little-endian) feeding ONNX DequantizeLinear(q, scale,
//     zero_point, axis). Per tensor (one scale) or per axis (one scale per
//     index of Shape[axis]; ONNX's default axis is 1, negative axes count
//     from the end). Logical element i is code i of the initializer.
//   - [KindNBits]: the B input of ONNX Runtime's com.microsoft.MatMulNBits.
//     The logical float weight is B^T of shape [K, N] as MatMul sees it:
//     element (k, n) has logical flat index k*N + n. It is stored as uint8
//     B[N][k_blocks][blob_size], k_blocks = ceil(K/block_size), blob_size =
//     block_size*bits/8, one scale (and zero point) per (n, k-block).
//
// # Arithmetic
//
// Dequantize: x = (q − zp)·scale, computed as float32(q − zp) * scale, as
// ORT's CPU DequantizeLinear does. For MatMulNBits with float zero points
// it is (float32(q) − zp) * scale. Scales of float16/bfloat16 tensors are
// widened to float32 by the caller (exactly); all arithmetic is float32.
// ORT's fused kernels may evaluate the same formula with other rounding
// (e.g. q*scale + (−scale*zp), FMA, fp16 accumulation): the value computed
// here is the reference value, not a promise about kernel output bits.
//
// Quantize (ONNX QuantizeLinear semantics): q = saturate(round_half_even(
// v/scale) + zp), v/scale computed in float32, saturation to the code's
// range. A NaN quantizes to the lowest code, as ORT's MLAS kernel does (it
// clamps with MAXPS/FMAXNM, which return the bound for a NaN), and is
// reported as clipped. With float zero points (MatMulNBits only, zero
// points need not be integers) the code is the nearest one to
// v/scale + zp, ties to even.
//
// Patching: with base = Dequantize(old code) the float result is
// base + float32(alpha·(v − base)) for Overwrite and base + float32(alpha·v)
// for Delta (the product rounded to float32 first, as package patch does),
// except that Overwrite with alpha = 1 takes v itself, as package patch
// writes v exactly in that case. The result is then requantized.
//
// Scales must be finite and non-zero (a zero scale makes every code
// dequantize to 0, nothing can land, and v/scale divides by zero).
// Negative scales are accepted: ORT's symmetric blockwise quantizer
// produces them (range2scale in q4_dq.cpp maps the largest-magnitude value
// to the lowest code, giving scale = −max/half_range, negative when that
// value is positive), and round(v/scale) still picks the nearest code.
//
// # What was verified, and where (microsoft/onnxruntime)
//
// docs/ContribOperators.md, section com.microsoft.MatMulNBits:
// dequantized_weight = (quantized_weight − zero_point)·scale; K, N,
// block_size (power of two ≥ 16), bits (supported values 2, 4, 8; default
// 4); B is uint8 (N, k_blocks, blob_size), k_blocks = ceil(K/block_size),
// blob_size = block_size·bits/8, "for 4 bits, the first 4 bits are stored
// in the lower 4 bits of a byte, and the second 4 bits are stored in the
// higher 4 bits"; scales (N, k_blocks) of A's type; zero_points optional,
// either packed uint8 of shape (N, ceil(k_blocks·bits/8)) "using the same
// bit-packing method as input B", or unpacked of A's float type (N,
// k_blocks); absent: 2^(bits−1) (8 for 4 bits, 128 for 8 bits).
//
// onnxruntime/contrib_ops/cpu/quantization/matmul_nbits_helper.h
// (CheckInputs): bits must be 2, 4 or 8; block_size a power of 2 ≥ 16; B
// shape (N, k_blocks, blob_size); scales (N·k_blocks) or (N, k_blocks);
// uint8 zero_points (N·zp_blob) or (N, zp_blob) with zp_blob =
// (k_blocks·bits + 7)/8, i.e. padded to whole bytes PER COLUMN n; float
// zero_points must have the scales' type and (N, k_blocks).
//
// onnxruntime/core/mlas/lib/q4_dq.cpp (BlockwiseQuantizer, BitsTraits):
// 8/bits codes per byte (kPackSize 1, 2, 4 for 8, 4, 2 bits); element idx
// of a byte is (byte >> (bits·idx)) & (2^bits − 1), i.e. low bits first;
// dequantize reads zero_points[col·ceil(k_blocks/kPackSize) + kb/kPackSize]
// with the same GetElem, defaults to kMid = 2^(bits−1) without zero
// points, and computes (vi − zp)·scale; the zero-point buffer size is
// ceil(k_blocks·bits/8)·N. onnxruntime/contrib_ops/cpu/quantization/
// matmul_nbits_impl.cc (Dequantize4BitsKernelReOrder) agrees for 4 bits:
// zero point of (n, kb) at byte n·((k_blocks+1)/2) + kb/2, odd kb in the
// high nibble, default 8, and nibble i of a little-endian word is element
// i. (The older dequantize_blockwise.h packed the N·k_blocks zero points
// continuously without per-column padding; the current helper and MLAS pad
// per column, which this package follows.)
//
// onnxruntime/core/providers/cpu/quantization/quantize_linear.cc:
// DequantizeLinear's default axis is 1; a scalar or 1-element scale means
// per tensor (axis ignored); per axis splits the shape into
// SizeToDimension(axis) × shape[axis] × SizeFromDimension(axis+1) with a
// 1-D scale/zero point of length shape[axis]; output =
// float(int32(q) − zp) * scale. onnxruntime/core/mlas/lib/quantize.cpp:
// QuantizeLinear is saturate(RoundToEven(Input / Scale) + ZeroPoint), a
// float32 division, clamping before the round-to-nearest-even conversion
// (NaN → lower bound).
//
// # Performance
//
// The batch loops make one pass over the indices (plus a validation pass),
// allocate nothing and touch only the codes' bytes and their scale and zero
// point. For MatMulNBits the logical order k·N + n is the transpose of the
// storage order (column n, then k), so consecutive sorted indices land
// k_blocks·blob_size bytes apart and each entry costs cache and TLB misses
// on the code byte, its scale and its zero point (BenchmarkApplyOverwrite:
// about 3× the per-entry time of int8 QDQ on a 4096×4096 weight).
//
// Not covered: ONNX int4/uint4 QDQ codes, blocked DequantizeLinear
// (opset 21 block_size), MatMulNBits g_idx and prepacked B
// (weight_prepacked ≠ 0, or B already prepacked by a session): those must
// be refused by the caller.
package quant
