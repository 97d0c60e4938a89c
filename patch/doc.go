// Package patch applies, reverts, switches and fuses SHiRA adapters on a
// set of weight buffers, in place, transactionally and in parallel.
//
// A [Patcher] is built over the weights ([New]) and then moved between
// adapter configurations: [Patcher.Set] makes exactly the given list of
// (adapter, alpha) configurations active, [Patcher.Apply] adds one,
// [Patcher.Revert] goes back to the base weights. Every call validates the
// whole new configuration (target names, dtypes, shapes, index order and
// bounds, base and model fingerprints, alpha) before the first write; on
// error nothing has changed.
//
// # Semantics
//
// For every touched flat index i of a weight, with base value b and the
// active configurations (adapter_k, alpha_k) in the order given:
//
//   - a single Overwrite adapter with alpha = 1 touching i: w = v exactly
//     (converted to the weight dtype if the value dtype differs);
//   - otherwise, in float32: acc = b; for each configuration touching i:
//     acc = acc + float32(alpha*d), with d = v - b for Overwrite and d = v
//     for Delta; then w = round(acc) to the weight dtype (round to nearest
//     even; bfloat16 as tensor.Float32ToBFloat16, float16 bit-identical to
//     tensor.Float32ToFloat16 (x448/float16), narrowed a block at a time).
//     The product is rounded explicitly so no FMA fusion changes bits
//     between architectures.
//
// The original bytes at the union of touched indices are saved before the
// first write and written back on revert, so reverting is bit-exact for
// every dtype (NaN payloads and -0 included). A float16 or bfloat16 weight
// may be stored widened to float32 (Weight.Widened, as ONNX Runtime holds
// such a weight after converting it for packing): every result is the one
// computed for the narrow weight, stored as its float32 value. Switching A→B reverts A and
// applies B, except that weights whose ordered list of (tensor, alpha) is
// unchanged are left alone; the result always equals a fresh Set(B) on the
// base weights. Offline fusion ([FuseInto]) runs the same code, so a live
// session and a fused model agree bit for bit.
//
// # Quantized weights
//
// A weight with Weight.Quant set holds the integer codes q of a QDQ
// initializer (quant.KindQDQ: int8, uint8, int16 or uint16, per tensor or
// per axis) or the packed B input of a MatMulNBits node (quant.KindNBits:
// 2-, 4- or 8-bit codes in blocks of block_size along K, each block with
// its own scale and zero point); see package internal/quant. Adapter
// tensors for it have the code dtype as DType (uint8 for MatMulNBits) and
// the weight's Shape, and float values in the dequantized domain. A
// MatMulNBits weight's Shape is the logical [K, N], element (k, n) at flat
// index k·N + n as in the float MatMul weight it stands for, while its
// Data is the packed storage (Quant.RawLen() bytes: [N][k_blocks][blob],
// low bits first). For every touched index the base value is
// b = Dequantize(q) = float32(q − zp)·scale ((float32(q) − zp)·scale with
// float zero points), the float result is computed from b exactly as
// above for a float32 weight
// (including the verbatim v of a sole Overwrite at alpha 1, and the
// accumulation order of several configurations), and quantized once with
// the element's scale and zero point (round half to even, saturating:
// quant.Scheme.Quantize). Results are computed while the configuration is
// validated, before the first write; a NaN or infinite value or result is
// refused with ErrNonFinite whether or not WithFiniteCheck is given (a
// code cannot hold it). The original codes are saved and written back on
// revert; a 2- or 4-bit code is read and written inside its byte without
// disturbing its neighbours, so revert restores every byte exactly
// (padding codes of a partial last block are never touched). The QDQ
// codes are computed in parallel chunks into pending buffers during
// validation, then written in one address-ordered pass per chunk (revert
// and apply interleaved, as for floats). A MatMulNBits weight is planned
// and written by one task (neighbouring k of a block share a byte, so it
// is not split), with the scheme's per-element methods; different weights
// still run in parallel. [Patcher.Survival] reports how much of the
// intended change survived the requantization, for both kinds.
//
// # Concurrency
//
// A switch to a single adapter tensor per weight reverts the old
// configuration and applies the new one in one address-ordered pass per
// weight (each cache line fetched once); a switch to a fused configuration
// reverts first, then applies. The work is spread over at most
// WithWorkers (default GOMAXPROCS) goroutines, the caller's included; big
// tensors are split into chunks so several workers share one tensor.
// Saved originals (double-buffered: 2 × the element size per touched
// entry) and scratch buffers are reused: a switch allocates no buffers,
// only a goroutine per extra worker. A Patcher does no
// locking: its methods must not be called concurrently, and the caller
// (the ort package) must keep Runs that read the weights from overlapping
// a switch.
// Adapters in an active configuration must stay alive (not Closed) and
// unmodified until they are reverted or switched away.
package patch
