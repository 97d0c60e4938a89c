package export

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/shira-ort/shira-ort/tensor"
)

// Format is the value of Manifest.Format written by this package.
const Format = "shira-ort/export/v1"

// File names inside an exported directory.
const (
	ModelFile    = "model.onnx"
	WeightsFile  = "model.weights"
	ManifestFile = "manifest.json"
)

// DefaultAlignment is the default alignment of tensors in the weight file.
const DefaultAlignment = 4096

// ErrManifest reports a manifest that is missing, unreadable or inconsistent.
var ErrManifest = errors.New("export: bad manifest")

// Manifest describes an exported model directory (manifest.json).
type Manifest struct {
	// Format is always "shira-ort/export/v1".
	Format string `json:"format"`
	// Model and WeightsFile are file names relative to the directory.
	Model       string `json:"model"`
	WeightsFile string `json:"weights_file"`
	// Source identifies the model the directory was exported from.
	Source SourceModel `json:"source"`
	// Fingerprint is sha256 over the exposed tensors; see Fingerprint.
	Fingerprint string `json:"fingerprint"`
	// IRVersion is the exported model's ir_version. IRVersionOriginal is
	// set when Expose had to raise it to 4 (overridable initializers).
	IRVersion         int64 `json:"ir_version"`
	IRVersionOriginal int64 `json:"ir_version_original,omitempty"`
	// Opsets are the model's opset imports.
	Opsets []Opset `json:"opset,omitempty"`
	// Alignment is the byte alignment of every tensor in the weight file.
	Alignment int64 `json:"alignment"`
	// Tensors are the exposed (patchable) weights, in weight-file order.
	Tensors []TensorEntry `json:"tensors"`
	// External lists the other tensors stored in the weight file (those
	// that were external data in the source model).
	External []ExternalEntry `json:"external,omitempty"`
	// Notes are human-readable remarks about the export (ir_version bump,
	// Transposes that could not be folded, ...).
	Notes []string `json:"notes,omitempty"`
}

// SourceModel identifies the source model file.
type SourceModel struct {
	// Path is the source model's file name (without its directory, so an
	// export does not depend on where it ran).
	Path   string `json:"path"`
	SHA256 string `json:"sha256"` // of the .onnx file only, not its external data
}

// Opset is one opset import of the model.
type Opset struct {
	Domain  string `json:"domain"`
	Version int64  `json:"version"`
}

// TensorEntry describes one exposed weight.
type TensorEntry struct {
	// Name is the initializer name, which is also the graph input name.
	Name  string       `json:"name"`
	DType tensor.DType `json:"dtype"`
	Shape []int64      `json:"shape"`
	// Offset and Length locate the little-endian bytes in the weight file.
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
	// SHA256 is the hex sha256 of the exposed bytes.
	SHA256    string       `json:"sha256"`
	Consumers []Consumer   `json:"consumers"`
	Source    TensorSource `json:"source"`
	// Quant describes a quantized weight (DType then holds integer codes);
	// nil for a float weight.
	Quant *Quantization `json:"quant,omitempty"`
}

// Sum returns SHA256 decoded; ok is false when it is not 64 hex digits
// (then sum is zero, which patch and adapter read as "base unknown").
func (e *TensorEntry) Sum() (sum [32]byte, ok bool) {
	b, err := hex.DecodeString(e.SHA256)
	if err != nil || len(b) != len(sum) {
		return sum, false
	}
	copy(sum[:], b)
	return sum, true
}

// Consumer is a compute node reading an exposed weight.
type Consumer struct {
	Node       string `json:"node"`
	OpType     string `json:"op_type"`
	InputIndex int    `json:"input_index"`
	// Output is the node's first output name (nodes may be unnamed).
	Output string `json:"output,omitempty"`
	// TransA and TransB are the Gemm attributes (Gemm only).
	TransA *bool `json:"trans_a,omitempty"`
	TransB *bool `json:"trans_b,omitempty"`
	// Via lists the nodes between the weight and the consumer that stay in
	// the graph (Cast, or Transposes that could not be folded).
	Via []NodeRef `json:"via,omitempty"`
	// Subgraph names the node and attribute holding the consumer when it
	// sits in a control-flow subgraph ("If_0.then_branch"); "" in the main graph.
	Subgraph string `json:"subgraph,omitempty"`
}

// NodeRef names a node.
type NodeRef struct {
	Node   string `json:"node"`
	OpType string `json:"op_type"`
}

// TensorSource relates an exposed weight to the source model.
type TensorSource struct {
	// Name is the original initializer or Constant output name.
	Name string `json:"name"`
	// Shape is the original shape.
	Shape []int64 `json:"shape"`
	// Perm is set when the data was transposed at export:
	// exposed.shape[i] = source.shape[perm[i]].
	Perm []int64 `json:"perm,omitempty"`
	// FoldedNodes are the Transpose nodes removed by folding.
	FoldedNodes []string `json:"folded_nodes,omitempty"`
	// FromConstant is true when the weight was a Constant node.
	FromConstant bool `json:"from_constant,omitempty"`
}

// ExternalEntry is a non-exposed tensor stored in the weight file.
type ExternalEntry struct {
	Name   string `json:"name"`
	Offset int64  `json:"offset"`
	Length int64  `json:"length"`
}

// Entry returns the exposed tensor called name, or nil.
func (m *Manifest) Entry(name string) *TensorEntry {
	for i := range m.Tensors {
		if m.Tensors[i].Name == name {
			return &m.Tensors[i]
		}
	}
	return nil
}

// Names returns the exposed tensor names in weight-file order.
func (m *Manifest) Names() []string {
	out := make([]string, len(m.Tensors))
	for i, t := range m.Tensors {
		out[i] = t.Name
	}
	return out
}

// Fingerprint returns the hex sha256 over the sorted lines
// "name|dtype|shape|sha256\n" of the given entries, shape written as
// comma-separated dimensions (e.g. "w|float16|768,3072|ab12...").
func Fingerprint(entries []TensorEntry) string {
	lines := make([]string, len(entries))
	for i, e := range entries {
		lines[i] = e.Name + "|" + e.DType.String() + "|" + shapeString(e.Shape) + "|" + e.SHA256 + "\n"
	}
	sort.Strings(lines)
	h := sha256.New()
	for _, l := range lines {
		h.Write([]byte(l))
	}
	return hex.EncodeToString(h.Sum(nil))
}

func shapeString(shape []int64) string {
	s := make([]string, len(shape))
	for i, d := range shape {
		s[i] = strconv.FormatInt(d, 10)
	}
	return strings.Join(s, ",")
}

// Validate checks the manifest's internal consistency: format, file names,
// unique names, float dtypes, lengths matching shapes, alignment, no
// overlapping byte ranges and the fingerprint.
func (m *Manifest) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrManifest, fmt.Sprintf(format, a...))
	}
	if m.Format != Format {
		return bad("format %q, want %q", m.Format, Format)
	}
	for _, f := range []string{m.Model, m.WeightsFile} {
		if f == "" || !filepath.IsLocal(f) || strings.ContainsAny(f, `/\`) {
			return bad("file name %q must be a plain name inside the directory", f)
		}
	}
	seen := map[string]bool{}
	type span struct{ off, end int64 }
	var spans []span
	for _, t := range m.Tensors {
		if t.Name == "" || seen[t.Name] {
			return bad("empty or duplicate tensor name %q", t.Name)
		}
		seen[t.Name] = true
		switch {
		case t.DType.IsFloat() && t.Quant == nil:
		case t.DType.IsQuantCode() && t.Quant != nil:
			if _, err := t.Scheme(); err != nil {
				return bad("tensor %q: %v", t.Name, err)
			}
		case t.DType.IsQuantCode():
			return bad("tensor %q: dtype %v without its quantization", t.Name, t.DType)
		default:
			return bad("tensor %q: dtype %v is not patchable", t.Name, t.DType)
		}
		n, err := tensor.NumElements(t.Shape)
		if err != nil {
			return bad("tensor %q: %v", t.Name, err)
		}
		if int64(n)*int64(t.DType.Size()) != t.Length {
			return bad("tensor %q: length %d does not match %v %v", t.Name, t.Length, t.DType, t.Shape)
		}
		if t.Length == 0 {
			return bad("tensor %q is empty", t.Name)
		}
		if t.Offset%int64(t.DType.Size()) != 0 {
			return bad("tensor %q: offset %d is not aligned to its %v elements", t.Name, t.Offset, t.DType)
		}
		if t.Offset < 0 || (m.Alignment > 0 && t.Offset%m.Alignment != 0) {
			return bad("tensor %q: offset %d is not %d-aligned", t.Name, t.Offset, m.Alignment)
		}
		spans = append(spans, span{t.Offset, t.Offset + t.Length})
	}
	for _, e := range m.External {
		if e.Offset < 0 || e.Length < 0 {
			return bad("external tensor %q: negative offset or length", e.Name)
		}
		spans = append(spans, span{e.Offset, e.Offset + e.Length})
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].off < spans[j].off })
	for i := 1; i < len(spans); i++ {
		if spans[i].off < spans[i-1].end {
			return bad("byte ranges overlap at offset %d", spans[i].off)
		}
	}
	if fp := Fingerprint(m.Tensors); m.Fingerprint != fp {
		return bad("fingerprint %s does not match the tensors (%s)", m.Fingerprint, fp)
	}
	return nil
}
