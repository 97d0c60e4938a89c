// Package onnxwire reads and surgically rewrites ONNX protobuf messages
// (ModelProto, GraphProto, NodeProto, TensorProto, ValueInfoProto,
// AttributeProto, StringStringEntryProto) with nothing but
// google.golang.org/protobuf/encoding/protowire.
//
// A message is parsed into an ordered list of raw fields (number, wire type,
// original bytes). Typed accessors decode only what they are asked for;
// edits replace, insert or remove individual fields; encoding concatenates
// the original bytes of every untouched field. So a model that is parsed and
// encoded again is byte-for-byte identical, whatever its IR version, and
// fields this package does not know (newer ONNX fields, vendor extensions)
// travel through untouched, in their original order.
//
// Sub-messages are parsed lazily and cached: editing a node inside a graph
// inside a model marks the path as modified, and only that path is
// re-encoded. Subgraphs (the g / graphs attributes of If, Loop and Scan)
// are ordinary attribute fields and are kept byte for byte unless a caller
// edits them explicitly.
//
// Input is untrusted. Messages nest at most MaxDepth levels (protobuf's
// and ONNX Runtime's limit; deeper ones are ErrTooDeep and never parsed),
// and external data is read only from regular files inside the model's
// directory once symbolic links are followed (OpenInDir;
// ErrEscapesModelDir, ErrNotRegularFile).
//
// The field numbers below were written down by hand from the ONNX IR
// specification; no generated code is used.
package onnxwire
