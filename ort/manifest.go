package ort

import (
	"encoding/hex"
	"fmt"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/tensor"
)

// File names inside an exported model directory (see package export).
const (
	ModelFile    = export.ModelFile
	ManifestFile = export.ManifestFile
)

// manifest is the manifest.json export.Expose writes.
type manifest = export.Manifest

// loadManifest reads and validates dir/manifest.json.
func loadManifest(dir string) (*manifest, error) {
	m, err := export.LoadManifest(dir)
	if err != nil {
		return nil, fmt.Errorf("ort: %w", err)
	}
	return m, nil
}

// checkEntry validates e against a weight file of size bytes and decodes
// its checksum.
func checkEntry(e *export.TensorEntry, size int64) ([32]byte, error) {
	var sum [32]byte
	if e.DType.Size() == 0 {
		return sum, fmt.Errorf("ort: weight %s: unsupported dtype %v", e.Name, e.DType)
	}
	n, err := tensor.NumElements(e.Shape)
	if err != nil {
		return sum, fmt.Errorf("ort: weight %s: %w", e.Name, err)
	}
	if int64(n)*int64(e.DType.Size()) != e.Length || e.Length == 0 {
		return sum, fmt.Errorf("ort: weight %s: %v %v needs %d bytes, manifest says %d", e.Name, e.DType, e.Shape, n*e.DType.Size(), e.Length)
	}
	if e.Offset < 0 || e.Offset > size || e.Length > size-e.Offset {
		return sum, fmt.Errorf("ort: weight %s: bytes [%d, %d) lie outside the %d-byte weight file", e.Name, e.Offset, e.Offset+e.Length, size)
	}
	if e.Offset%int64(e.DType.Size()) != 0 {
		return sum, fmt.Errorf("ort: weight %s: offset %d is not aligned to its %v elements", e.Name, e.Offset, e.DType)
	}
	b, err := hex.DecodeString(e.SHA256)
	if err != nil || len(b) != 32 {
		return sum, fmt.Errorf("ort: weight %s: bad sha256 %q", e.Name, e.SHA256)
	}
	copy(sum[:], b)
	return sum, nil
}
