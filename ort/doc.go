// Package ort runs ONNX models with ONNX Runtime (through internal/ortshim,
// after github.com/yalue/onnxruntime_go loaded the library) so that sparse
// adapters can be switched in and out of a live session by writing straight
// into the weight buffers ORT reads.
//
// Open loads a directory written by export.Expose (model.onnx,
// model.weights, manifest.json; OpenExported takes an export.Model opened
// once). The exposed weights live in a private copy-on-write memory map of
// model.weights owned by the Session: untouched pages cost no heap, and
// nothing is written back to the file. Init finds the ONNX Runtime library
// (WithLibraryPath, ONNXRUNTIME_SHARED_LIBRARY_PATH, or the cache that
// `shira-ort setup` and package ort/install fill).
//
// Every call that can block takes a context.Context: cancelling a Run
// terminates it inside ORT; Open and the switches (Set, Apply, Revert)
// check it between their steps.
//
// Process-wide effects: ONNX Runtime is loaded once per process. The first
// packed session registers the project's allocator on ORT's environment for
// the life of the process (sessions that do not ask for the environment's
// allocators, including every other mode's, are unaffected; an application
// that registered its own CPU allocator gets hybrid sessions). Opening a
// packed, baked or hybrid session fixes glibc's mmap threshold once per process
// (so released sessions give their weights back to the operating system;
// Options.KeepMallocSettings opts out), and releasing an ORT session
// returns free heap pages to the operating system (malloc_trim).
//
// # Modes
//
// Options.Mode chooses how an adapter switch reaches ORT:
//
//   - ModePacked (DefaultMode): one ordinary, fully optimized and
//     prepacked ORT session, created with the configuration entry
//     session.use_env_allocators=1 while an allocator the project
//     registered on ORT's environment (internal/ortshim) records every
//     allocation. ORT's CPU MatMul/Gemm kernels allocate one buffer per
//     prepacked float32 weight through it, in MLAS's packed SGEMM layout
//     (internal/mlaspack); Open identifies each exposed weight's buffer by
//     content (float16/bfloat16 weights in the float32 form ORT converts
//     them to) and a switch scatters the adapter's values into those
//     buffers at their packed offsets, under the write lock Runs hold
//     shared. Runs cost what a plain session's cost and a switch costs a
//     scatter; the originals a revert writes back are saved by the patcher
//     from the packed buffers, so the weights are held once. A model whose
//     exposed weights ORT does not all pack that way (a Conv, a Gather of
//     a tied embedding, weights an accelerator took, ARM64, an ORT version
//     whose layout was not checked) falls back to ModeHybrid; FallbackReason
//     says why.
//   - ModeLive: each exposed weight is wrapped in an ORT tensor without
//     copying and handed to ORT once, with OrtApi::AddInitializer (or, with
//     FeedEachRun, appended to the inputs of every Run). Every exposed
//     weight is also a graph input (an overridable initializer), so ORT
//     neither constant-folds nor prepacks it, and the next Run reads what
//     the patcher wrote. Those MatMul/Conv weights run unprepacked.
//   - ModeBaked: the exposed weights' graph-input entries are removed from
//     the graph (kept in memory once) and every external initializer is
//     handed to ORT from the mapping with OrtApi::AddExternalInitializers,
//     which ORT copies before graph optimization: folding, layout
//     transforms and prepacking see the patched bytes, and the session runs
//     like a plain one. A switch patches the mapping, builds a new session
//     and swaps it in; then the mapping is reverted to the file's bytes and
//     its private pages are dropped, so the weights are held once, by ORT.
//   - ModeHybrid: both. A switch is applied to the live
//     session at once, and a baked session is rebuilt in the background;
//     when ready it replaces the live one atomically (WaitBaked, Baked). A
//     newer switch supersedes a rebuild in progress.
//
// # Concurrency
//
// Run may be called from many goroutines at once and always sees exactly
// one adapter configuration. A Run on a live or packed session holds a read
// lock for its whole duration, and a switch patches the weights under the
// write lock. A Run on a baked session holds a reference to that immutable
// session; a switch swaps in another one, Runs in flight finish on the old
// one, and the last of them releases it.
//
// # Execution providers
//
// Options.Providers select execution providers in
// priority order: cpu, xnnpack, qnn, nnapi (appended through the shim's
// dlsym of OrtSessionOptionsAppendExecutionProvider_Nnapi) and coreml. A
// provider the loaded build lacks fails Open with a
// *ProviderUnavailableError, or falls back to CPU with
// Options.ProviderFallback (Session.Providers reports it). Only the CPU
// provider reads the patched host memory in place: accelerators compile
// weights at session creation, so live sessions keep the exposed weights
// as graph inputs (their consumers run on CPU or are fed to the device per
// Run) and baked sessions re-create the accelerated session at each
// switch. ProfilePartition reports which provider ran each node. See
// docs/providers.md.
//
// # ORT adapters
//
// LoadLoraAdapter loads an .onnx_adapter file with ORT's LoRA API and
// Session.RunLoRA runs with it active: its dense parameters replace the
// exposed weights of the same names for that Run.
package ort
