// Package ortadapter writes ONNX Runtime adapter files (.onnx_adapter): a
// FlatBuffer (file identifier "TORT", schema in schema/ort_adapter.fbs)
// holding named dense tensors that ORT feeds, per Run, in place of the
// model's overridable initializers of the same names (ORT's LoRA API:
// CreateLoraAdapter + RunOptionsAddActiveLoraAdapter).
//
// shira-ort uses it to hand ORT the exposed weights of a model with
// adapters applied, so a stock ORT application can switch fused weight
// sets without shira-ort.
//
// The file is written through the builders flatc generates from the schema
// (internal/ortfb, committed; regenerate with go generate).
package ortadapter

//go:generate flatc --go -o internal schema/ort_adapter.fbs

import (
	"fmt"

	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/shira-ort/shira-ort/internal/atomicfile"
	"github.com/shira-ort/shira-ort/internal/ortadapter/internal/ortfb"
	"github.com/shira-ort/shira-ort/tensor"
)

// FormatVersion is the adapter format version ORT accepts.
const FormatVersion = 1

// FileIdentifier is the FlatBuffers file identifier of .onnx_adapter files.
const FileIdentifier = "TORT"

// Parameter is one named dense tensor.
type Parameter struct {
	Name  string
	DType tensor.DType
	Dims  []int64
	// Data is the little-endian tensor bytes, len = product(Dims)*DType.Size().
	Data []byte
}

// Adapter is the content of an .onnx_adapter file.
type Adapter struct {
	AdapterVersion, ModelVersion int32
	Parameters                   []Parameter
}

// Encode serialises a, checking every parameter's byte length. Scalar
// fields equal to the schema default (0) are omitted, as FlatBuffers
// writers do; readers see them as 0.
func Encode(a *Adapter) ([]byte, error) {
	size := 256
	for i, p := range a.Parameters {
		n, err := tensor.NumElements(p.Dims)
		if err != nil {
			return nil, fmt.Errorf("ortadapter: parameter %q: %w", p.Name, err)
		}
		if p.Name == "" || p.DType.Size() == 0 || n*p.DType.Size() != len(p.Data) {
			return nil, fmt.Errorf("ortadapter: parameter %d %q: %d bytes for %v %v", i, p.Name, len(p.Data), p.DType, p.Dims)
		}
		size += len(p.Data) + 64 + len(p.Name) + 8*len(p.Dims)
	}
	b := flatbuffers.NewBuilder(size)
	offs := make([]flatbuffers.UOffsetT, len(a.Parameters))
	for i := range a.Parameters {
		p := &a.Parameters[i]
		// raw_data is force_align: 8, which flatc's Go code ignores: align
		// the bytes so that the data (not its length prefix) starts on 8.
		b.Prep(8, len(p.Data))
		raw := b.CreateByteVector(p.Data)
		ortfb.ParameterStartDimsVector(b, len(p.Dims))
		for j := len(p.Dims) - 1; j >= 0; j-- {
			b.PrependInt64(p.Dims[j])
		}
		dims := b.EndVector(len(p.Dims))
		name := b.CreateString(p.Name)
		ortfb.ParameterStart(b)
		ortfb.ParameterAddName(b, name)
		ortfb.ParameterAddDims(b, dims)
		ortfb.ParameterAddDataType(b, ortfb.TensorDataType(p.DType)) // tensor.DType uses the ONNX numbering too
		ortfb.ParameterAddRawData(b, raw)
		offs[i] = ortfb.ParameterEnd(b)
	}
	ortfb.AdapterStartParametersVector(b, len(offs))
	for i := len(offs) - 1; i >= 0; i-- {
		b.PrependUOffsetT(offs[i])
	}
	params := b.EndVector(len(offs))
	ortfb.AdapterStart(b)
	ortfb.AdapterAddFormatVersion(b, FormatVersion)
	ortfb.AdapterAddAdapterVersion(b, a.AdapterVersion)
	ortfb.AdapterAddModelVersion(b, a.ModelVersion)
	ortfb.AdapterAddParameters(b, params)
	b.FinishWithFileIdentifier(ortfb.AdapterEnd(b), []byte(FileIdentifier))
	return b.FinishedBytes(), nil
}

// Write encodes a and writes it to path atomically (a temporary file,
// fsync and rename; see internal/atomicfile): a crash or a kill leaves the
// old file or the new one, never a partial file.
func Write(path string, a *Adapter) error {
	data, err := Encode(a)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, data); err != nil {
		return fmt.Errorf("ortadapter: %w", err)
	}
	return nil
}
