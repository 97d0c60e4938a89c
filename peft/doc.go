// Package peft reads Hugging Face PEFT adapter checkpoints (SHiRA and LoRA:
// adapter_model.safetensors + adapter_config.json) and maps their modules to
// the weights exposed by export.Expose.
//
// # Checkpoints
//
// A SHiRA checkpoint (peft_type "SHIRA") holds, per adapted nn.Linear,
//
//	base_model.model.<module>.shira_weight   F32 [nnz]      deltas: W += values*scale
//	base_model.model.<module>.shira_indices  I32 [2, nnz]   row 0 = output row, row 1 = input
//	                                                        column of the [out, in] weight
//
// (indices stored as F32, as PEFT does on Windows, are accepted when every
// value is a whole number). A LoRA checkpoint (peft_type "LORA") holds
// lora_A.weight [r, in] and lora_B.weight [out, r] per module, and the scale
// is lora_alpha/r (lora_alpha/sqrt(r) with use_rslora), with rank_pattern
// and alpha_pattern overrides; a config without lora_alpha gets scale 1
// (alpha = r), and lora_alpha 0 gives scale 0. A module's tensors may be
// keyed with or without the base_model.model. prefix, but not both.
//
// With fan_in_fan_out (GPT-2 style Conv1D modules, whose weight is stored
// [in, out]) the SHiRA indices address that stored [in, out] weight and
// lora_B·lora_A is transposed, as in PEFT's LoRA merge.
//
// # Mapping modules to exposed tensors
//
// torch.onnx.export turns nn.Linear into MatMul over a transposed [in, out]
// initializer with a generated name (onnx::MatMul_123), or into Gemm with
// transB=1 over the original [out, in] weight (lm_head.weight). The module
// path survives in the consuming node's name
// (/model/layers.0/self_attn/q_proj/MatMul). A Mapper derives, for every
// exposed weight, candidate module paths from its consumers' node names and
// from its own and its source's names (a trailing ".weight" removed), and
// resolves a checkpoint module by exact match, then by a unique match where
// one path is a dot-boundary suffix of the other (a model exported from an
// inner module).
//
// The module's consumer also fixes the layout, how the exposed tensor holds
// the module's [out, in] matrix: MatMul's B and Gemm's B without transB read
// [in, out]; Gemm's B with transB=1, and MatMul's or Gemm's A, read
// [out, in]. A Transpose that export could not fold (a tied embedding and
// lm_head: embed.weight read by a Gather and, as lm_head, through a
// Transpose by a MatMul) stays between the tensor and the consumer
// (Consumer.Via); its permutation, read from the exported graph, is
// composed with the consumer's layout. When a tensor has several consumers
// that disagree (linear layers reading it directly and through a
// Transpose), the one whose node name names the module decides; when none
// does, Resolve refuses (ErrLayout) rather than guess.
package peft
