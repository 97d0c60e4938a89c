// Package textgen generates text with a character-level language model run
// by ONNX Runtime, such as the charlm demo model (models/charlm).
//
// The model takes int64 token ids [batch, seq] and returns float32 logits
// [batch, seq, vocab]; there is no KV cache, so each new character runs the
// model over the last Context characters (cheap for a small char model).
// The vocabulary is a JSON file {"chars": [...], "unk": i, "context": n}
// whose i-th string is the character of token i.
//
// Sampling is temperature + top-k from a seeded PCG generator, so the same
// seed, prompt and weights give the same text: switching a SHiRA adapter in
// and out of the session between two Generate calls changes only the
// weights.
package textgen
