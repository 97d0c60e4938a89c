// Package charlm embeds the charlm demo model: a small character-level
// transformer trained on text from Debian packages, with one SHiRA adapter
// and one LoRA adapter (same parameter count) per style of text, all in
// Hugging Face PEFT's checkpoint layout. gen_charlm.py beside this file
// regenerates everything (fixed seeds); docs/charlm.md has the numbers.
package charlm

import "embed"

// Files holds model.onnx, vocab.json, reference.json, losses.json and the
// PEFT checkpoints shira/<style>/ and lora/<style>/.
//
//go:embed model.onnx vocab.json reference.json losses.json shira lora
var Files embed.FS
