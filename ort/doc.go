// Package ort runs ONNX models with ONNX Runtime (through
// github.com/yalue/onnxruntime_go and internal/ortshim) so that sparse
// adapters can be switched in and out of a live session by writing straight
// into the weight buffers ORT reads.
//
// Open loads a directory written by export.Expose (model.onnx,
// model.weights, manifest.json). The exposed weights live in a private
// copy-on-write memory map of model.weights owned by the Session: untouched
// pages cost no heap, and nothing is written back to the file. Each weight
// is wrapped in an ORT tensor without copying and handed to ORT once, with
// OrtApi::AddInitializer, before the session is created (or, with
// FeedEachRun, appended to the inputs of every Run). Because every exposed
// weight is also a graph input (an overridable initializer), ORT neither
// constant-folds nor prepacks it, so the next Run reads what the patcher
// wrote.
//
// Concurrency: Run may be called from many goroutines at once. Run holds a
// read lock for its whole duration; Set, Apply and Revert hold the write
// lock. A switch therefore never overlaps a Run, and every Run sees exactly
// one adapter configuration: the one active when it started.
//
// Only the CPU execution provider reads host memory in place, so it is the
// only one supported.
package ort
