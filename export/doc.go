// Package export turns an ONNX model into a shira-ort model directory whose
// patchable weights are overridable initializers stored in one page-aligned
// weight file, and turns such a directory back into a self-contained model.
//
// Expose writes
//
//	DIR/model.onnx     the graph; every exposed weight is an initializer AND a
//	                   graph input, its data external in model.weights
//	DIR/model.weights  exposed weights first, each at an Options.Alignment
//	                   (default 4096) aligned offset; then every other tensor
//	                   that was external in the source model (also aligned)
//	DIR/manifest.json  a Manifest
//
// # Target selection
//
// By default every non-empty initializer (or Constant node output) of rank >= 2 and
// type float32, float16 or bfloat16 that reaches the weight input of a
// MatMul (either input), Gemm (A or B) or Conv (W) directly or through a
// chain of Cast / Transpose nodes is exposed. Options.Targets narrows this
// to weights whose exposed name, source name or a consuming node's name
// matches. Nodes inside subgraphs (If/Loop/Scan bodies, at any depth) that
// read a main-graph weight directly (no Cast/Transpose chain) are consumers
// too, recorded with the subgraph that holds them; such a use counts as
// "used elsewhere" (it blocks Transpose folding and the removal of anything
// it reads). Subgraphs are otherwise kept byte for byte, except that tensors stored
// externally inside them are moved to model.weights like every other
// external tensor.
//
// # Constant nodes and Transpose folding
//
// A Constant node feeding a weight input is removed and its tensor becomes
// an initializer named after the Constant's output. When a weight reaches
// its consumers through Transpose nodes, the composed permutation is
// applied to the data at export time and the result is exposed under the
// name SOURCE + ".T" (".T2", ".T3", ... if taken); the Transpose nodes and
// the original initializer are removed, Cast nodes on the path stay (they
// then read the new initializer), and the permutation is recorded in the
// manifest (TensorSource.Perm, with exposed.shape[i] = source.shape[perm[i]]).
// Folding happens only when it is safe: every path from the weight to a
// consumer has the same composed permutation, and neither the weight nor any
// intermediate value is used by anything else (another node, a graph output,
// a subgraph). Otherwise the weight is exposed unchanged under its own name,
// the Transposes stay in the graph and run on every Run, and Manifest.Notes
// says so.
//
// # Large models
//
// The source model's protobuf (at most 2 GB) is read into memory once; the
// output model is streamed from it, and tensor bytes are streamed into the
// weight file, external tensors by file offset, so a model whose weights
// are tens of GB in external data is exported without holding them. Only a
// tensor that must be transposed is held in memory (that tensor alone).
// WriteStandalone inlines all weights when the result fits in the 2 GB
// protobuf limit and otherwise writes them to OUT.data beside the model.
//
// Every file is written to a temporary name in the destination directory
// and renamed into place once complete; the manifest is renamed last.
//
// # Untrusted models and directories
//
// Source models and exported directories may come from anyone. External
// data, like the files of an exported directory that Open reads, must be a
// regular file inside the model's directory once symbolic links are
// followed (links that stay inside are fine; ONNX Runtime applies the same
// rule): a location outside is refused with ErrEscapesModelDir, a
// directory, FIFO, socket or device with ErrNotRegularFile, without
// reading or blocking on it. Subgraphs nested deeper than protobuf allows
// (onnxwire.MaxDepth) are refused before they are parsed. Expose and
// WriteStandalone never write over a file they read (ErrOverwritesInput).
package export
