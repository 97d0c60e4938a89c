package ort

import (
	"fmt"

	"github.com/shira-ort/shira-ort/export"
)

// checkEntry checks e's byte range against a weight file of size bytes and
// decodes its checksum. Dtype, length against shape, emptiness and element
// alignment were already checked by export.LoadManifest (Manifest.Validate).
func checkEntry(e *export.TensorEntry, size int64) ([32]byte, error) {
	var sum [32]byte
	if e.Offset < 0 || e.Offset > size || e.Length > size-e.Offset {
		return sum, fmt.Errorf("ort: weight %s: bytes [%d, %d) lie outside the %d-byte weight file", e.Name, e.Offset, e.Offset+e.Length, size)
	}
	sum, ok := e.Sum()
	if !ok {
		return sum, fmt.Errorf("ort: weight %s: bad sha256 %q", e.Name, e.SHA256)
	}
	return sum, nil
}
