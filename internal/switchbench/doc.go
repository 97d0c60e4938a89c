// Package switchbench measures how fast SHiRA adapters switch compared
// with LoRA re-fusion, and how close the switch is to the memory floor:
//
//   - per tensor (the SHiRA paper's Fig. 7): a d×d weight, SHiRA apply,
//     revert and switch A→B (package patch) against LoRA fuse, unfuse and
//     switch at the rank with the same parameter count, the LoRA product
//     computed by ONNX Runtime (package lora);
//   - whole model (the paper's Table 6): every linear weight of the
//     TinyLlama-shaped model of package sessionbench, switch end to end
//     including reading the adapter file, with a warm and a cold page
//     cache;
//   - the floor: the bytes a switch must move (cache lines touched, read
//     and written, plus the index, value and saved-original streams) over
//     the copy bandwidth measured in the same run.
//
// Every comparison is measured side by side in one run (the operations
// interleave round by round) and reported as medians, because the machine
// it runs on is shared and noisy. `shira-bench switch` and
// `go test -bench` in this package run it.
package switchbench
