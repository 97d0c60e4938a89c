// Package adapter reads and writes the .shira file format: a Sparse High
// Rank Adapter (SHiRA) stored as, per target weight tensor, a sorted list of
// flat indices and the values that go there.
//
// The file is a FlatBuffer (schema adapter/schema/shira.fbs, file
// identifier "SHRA"). [Encode] and [Write] produce it, [Decode] and [Open]
// read it without copying the index and value arrays: they alias the input
// buffer (or the read-only memory map made by Open) whenever it is suitably
// aligned. The Go FlatBuffers runtime has no verifier, so Decode first checks
// every offset, vtable, vector length and string against the buffer bounds,
// then the content (format version, dtypes, sizes, index order and bounds,
// duplicate names). A malformed file is always an error wrapping
// [ErrInvalid] or [ErrUnsupported], never a panic.
//
// The package assumes a little-endian host, as the rest of shira-ort does.
package adapter

//go:generate flatc --go -o internal schema/shira.fbs
