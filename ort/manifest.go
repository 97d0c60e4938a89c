package ort

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/shira-ort/shira-ort/tensor"
)

// File names inside an exported model directory.
const (
	ModelFile    = "model.onnx"
	ManifestFile = "manifest.json"
)

// manifest is the part of export's manifest.json a Session needs.
// TODO(lead): switch to export.LoadManifest once the export package lands.
type manifest struct {
	WeightsFile string          `json:"weights_file"`
	Fingerprint string          `json:"fingerprint"` // of the exposed tensors; "" = unknown
	Tensors     []manifestEntry `json:"tensors"`
}

// manifestEntry describes one exposed weight.
type manifestEntry struct {
	Name   string       `json:"name"`
	DType  tensor.DType `json:"dtype"`
	Shape  []int64      `json:"shape"`
	Offset int64        `json:"offset"`
	Length int64        `json:"length"`
	SHA256 string       `json:"sha256"`
}

func loadManifest(dir string) (*manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return nil, fmt.Errorf("ort: %w", err)
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("ort: %s: %w", filepath.Join(dir, ManifestFile), err)
	}
	if m.WeightsFile == "" {
		m.WeightsFile = "model.weights"
	}
	if filepath.Base(m.WeightsFile) != m.WeightsFile {
		return nil, fmt.Errorf("ort: manifest weights_file %q must be a plain file name", m.WeightsFile)
	}
	return &m, nil
}

// check validates e against a weight file of size bytes and decodes its
// checksum.
func (e *manifestEntry) check(size int64) ([32]byte, error) {
	var sum [32]byte
	if e.Name == "" {
		return sum, fmt.Errorf("ort: manifest entry without a name")
	}
	if e.DType.Size() == 0 {
		return sum, fmt.Errorf("ort: weight %s: unsupported dtype %v", e.Name, e.DType)
	}
	n, err := tensor.NumElements(e.Shape)
	if err != nil {
		return sum, fmt.Errorf("ort: weight %s: %w", e.Name, err)
	}
	if int64(n)*int64(e.DType.Size()) != e.Length {
		return sum, fmt.Errorf("ort: weight %s: %v %v needs %d bytes, manifest says %d", e.Name, e.DType, e.Shape, n*e.DType.Size(), e.Length)
	}
	if e.Length == 0 {
		return sum, fmt.Errorf("ort: weight %s is empty", e.Name)
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
