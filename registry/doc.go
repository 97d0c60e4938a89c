// Package registry is an adapter library for one exported model: it holds
// hundreds to thousands of registered SHiRA adapters by name, opens
// (memory-maps) each one only when it is asked for, and keeps a bounded
// number of unused ones open for the next request.
//
// A [Library] is built over one [export.Model]. [Library.Register] adds an
// adapter under a name from a .shira file, a PEFT SHiRA checkpoint
// directory or a PEFT LoRA checkpoint directory; [Library.RegisterDir] adds
// every adapter of a directory. Registering a .shira file only checks that
// it is a readable regular file: nothing is mapped, so a registered adapter
// costs memory only while it is open. A PEFT checkpoint is converted to a
// .shira file once, at registration, into a cache directory keyed by the
// checkpoint's bytes, the model and the conversion options, so a restarted
// process finds it converted.
//
// [Library.Acquire] returns the named adapter open (mapped by
// adapter.Open), validated against the model on every open (model
// fingerprint, target names, dtypes, shapes and base weights, exactly as
// patch.Patcher.Set checks them; finite values, as adapter.Open checks
// them), and retained for the caller, who hands it back with
// [Library.Release] when nothing uses it any more (sessions included).
// Concurrent Acquires of a name open it once. Adapters that are open but
// not acquired are kept in least-recently-used order, at most
// Options.MaxOpen of them and Options.MaxOpenBytes bytes of their
// mappings; beyond that the least recently used is closed. An adapter that
// is acquired is never closed by the library: [Library.Unregister] and
// [Library.Close] close it when its last holder releases it, and the
// mapping itself goes when the last user of the adapter.Adapter (a
// session that retained it, say) lets go.
//
// Names are what requests carry: non-empty, at most [MaxNameLen] bytes of
// valid UTF-8 without control characters and without '/', ',' or '@' (a
// configuration key is written "name@alpha,name@alpha"); see [CheckName].
//
// A Library is safe for concurrent use. The package needs cgo, as package
// lora does: ONNX Runtime computes the products of LoRA checkpoints, and is
// loaded (ort.Init) only when the first one is converted.
package registry
