// Package lora fuses PEFT LoRA adapters into exposed weights (W += scale·B·A,
// the baseline SHiRA switching is compared with) and turns them into SHiRA
// adapters holding the top-k entries of scale·B·A per tensor.
//
// The dense product runs in ONNX Runtime, not in Go: an Engine holds two tiny
// in-memory graphs (MatMul then Mul by the scale, with and without a
// Transpose for weights stored [in, out]) in CPU sessions, so the GEMM uses
// ORT's optimized, multi-threaded kernels. Adding the product to a weight
// is a single pass in Go (rounded to nearest even for fp16/bf16 weights).
package lora
