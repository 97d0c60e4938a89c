// Package lorabranch builds the per-run LoRA baseline that SHiRA serving is
// measured against (issue 15): an ONNX model exported WITH LoRA branches,
// and ONNX Runtime adapter files (.onnx_adapter) that ORT's own LoRA API
// (ort.LoadLoraAdapter / ort.NewLoraAdapter, Session.RunLoRA) activates for
// one Run at a time, with no switch at all but an extra branch on every Run.
//
// # The branch model
//
// AddBranches rewrites a model (with internal/onnxwire, keeping every
// untouched byte) so that, for each target weight W [K, N] read by MatMul as
// its B input,
//
//	Y = X·W    becomes    Y = X·W + (X·A)·B
//
// where A [K, r] and B [r, N] are new float32 initializers that are also
// graph inputs (overridable initializers), named W+".lora_A" and
// W+".lora_B" (ParamNames). Both are zeros, so with no adapter active the
// model computes what the original computes, bit for bit under ORT (the
// tests check it): the branch adds +0, which changes nothing unless X·W has
// a -0 entry (it becomes +0) or X holds an infinity or a NaN (0·∞ is NaN).
// The MatMul's output is renamed and the sum takes its old name, so every
// reader of Y, graph outputs included, is unchanged. An adapter feeds A and
// B for one Run; any scale (PEFT's lora_alpha/r) is folded into B by
// whoever writes the adapter (FromPeft does).
//
// Only float32 rank-2 weights whose every reader is a main-graph MatMul
// reading them as B are accepted (how torch.onnx.export writes nn.Linear:
// onnx::MatMul_N, [in, out]); a weight read by Gemm, Conv, Gather, a
// Transpose, a Cast, a control-flow subgraph or as a graph output is refused
// with an error wrapping ErrTarget, and so is a weight of another dtype.
// Candidates lists the weights a model accepts.
//
// # Standalone and exported models
//
// AddBranches works on the bytes of any model file and never reads tensor
// data: it needs only the weights' names, dtypes and dims. Two inputs are
// supported with the same code:
//
//   - a standalone model (torch's export, the charlm model.onnx): the result
//     is self-contained when the input was, and is opened with
//     ort.OpenModelData (when its tensors are external data, write it beside
//     the input and open it with ort.OpenModel); W stays a constant
//     initializer, so ORT prepacks it as it does for the original, and only
//     the branch costs extra. This is the per-run LoRA baseline.
//   - the model.onnx of a directory written by export.Expose: W is an
//     exposed weight (already an overridable initializer whose data lives in
//     model.weights). External data references are kept as they are, so the
//     result must be written into the same directory (say model.lora.onnx
//     beside model.onnx; export.Open keeps reading model.onnx) and opened
//     with ort.OpenModel on that path. W stays overridable there, so ORT
//     does not prepack it, in the branch model as in model.onnx.
//
// The target names are the initializer names of the model given. For a
// torch export they are the exposed names too: export.Expose keeps an
// initializer's name unless it folds a Transpose into it, and a weight
// behind a Transpose is refused here anyway. So adapters resolved against
// the exported directory (FromPeft) fit the branch model of either input.
//
// # Adapters
//
// Params holds A and B for one branch; Encode and WriteAdapter turn a set of
// them into an .onnx_adapter (internal/ortadapter) whose parameters are
// named as the branch inputs, so ORT feeds them in place of the zeros for
// the Runs the adapter is active in. FromPeft reads a PEFT LoRA checkpoint
// (peft.Open, lora.Resolve against the exported model) and lays lora_A and
// lora_B out for the stored weight with the scale folded into B; Random
// makes synthetic adapters, and RankForDensity picks the rank whose
// parameter count matches a SHiRA adapter of a given density. Merge adds
// A·B into the weights, the offline-fused model a per-run adapter must
// reproduce.
package lorabranch
