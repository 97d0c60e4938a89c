package ortadapter

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"unsafe"

	"github.com/shira-ort/shira-ort/internal/ortadapter/internal/ortfb"
	"github.com/shira-ort/shira-ort/tensor"
)

func sample() *Adapter {
	return &Adapter{AdapterVersion: 3, ModelVersion: 5, Parameters: []Parameter{
		{Name: "W1", DType: tensor.Float32, Dims: []int64{2, 3}, Data: tensor.Bytes([]float32{1, 2, 3, 4, 5, 6})},
		{Name: "layer.b", DType: tensor.Float16, Dims: []int64{3}, Data: tensor.Bytes([]uint16{0x3c00, 0x4000, 0xbc00})},
		{Name: "s", DType: tensor.BFloat16, Dims: []int64{}, Data: tensor.Bytes([]uint16{0x3f80})},
	}}
}

// TestEncodeGolden pins the encoding: testdata/golden.onnx_adapter was
// written by the earlier hand-numbered encoder (whose output ORT's LoRA
// API loads; test/ and cmd/shira-ort check that with ORT), and the
// generated builders produce the same bytes. The sample's versions are
// non-zero so every field is present; the earlier encoder also wrote zero
// versions, which the generated builders omit as the schema default.
func TestEncodeGolden(t *testing.T) {
	got, err := Encode(sample())
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join("testdata", "golden.onnx_adapter"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Encode differs from testdata/golden.onnx_adapter:\n got %x\nwant %x", got, want)
	}
}

// TestEncodeReadBack reads an encoded adapter through the generated
// accessors, field by field.
func TestEncodeReadBack(t *testing.T) {
	for _, a := range []*Adapter{sample(), {}, {Parameters: sample().Parameters[:1]}} {
		b, err := Encode(a)
		if err != nil {
			t.Fatal(err)
		}
		if id := string(b[4:8]); id != FileIdentifier {
			t.Fatalf("file identifier %q, want %q", id, FileIdentifier)
		}
		r := ortfb.GetRootAsAdapter(b, 0)
		if r.FormatVersion() != FormatVersion || r.AdapterVersion() != a.AdapterVersion || r.ModelVersion() != a.ModelVersion {
			t.Errorf("versions %d %d %d, want %d %d %d", r.FormatVersion(), r.AdapterVersion(), r.ModelVersion(), FormatVersion, a.AdapterVersion, a.ModelVersion)
		}
		if r.ParametersLength() != len(a.Parameters) {
			t.Fatalf("%d parameters, want %d", r.ParametersLength(), len(a.Parameters))
		}
		var p ortfb.Parameter
		for i, want := range a.Parameters {
			if !r.Parameters(&p, i) {
				t.Fatalf("parameter %d missing", i)
			}
			dims := make([]int64, p.DimsLength())
			for j := range dims {
				dims[j] = p.Dims(j)
			}
			raw := p.RawDataBytes()
			if string(p.Name()) != want.Name || !slices.Equal(dims, want.Dims) || tensor.DType(p.DataType()) != want.DType || !bytes.Equal(raw, want.Data) {
				t.Errorf("parameter %d: %q %v %v %x, want %q %v %v %x", i, p.Name(), dims, p.DataType(), raw, want.Name, want.Dims, want.DType, want.Data)
			}
			// force_align: 8 on raw_data, relative to the buffer's start
			if off := uintptr(unsafe.Pointer(unsafe.SliceData(raw))) - uintptr(unsafe.Pointer(unsafe.SliceData(b))); off%8 != 0 {
				t.Errorf("parameter %d: raw_data at offset %d, not 8-byte aligned", i, off)
			}
		}
	}
}

func TestEncodeRefusesBadParameters(t *testing.T) {
	for _, p := range []Parameter{
		{Name: "", DType: tensor.Float32, Dims: []int64{1}, Data: make([]byte, 4)},
		{Name: "x", DType: tensor.Float32, Dims: []int64{2}, Data: make([]byte, 4)},
		{Name: "x", DType: tensor.Undefined, Dims: []int64{1}, Data: make([]byte, 4)},
		{Name: "x", DType: tensor.Float32, Dims: []int64{-1}, Data: nil},
	} {
		if _, err := Encode(&Adapter{Parameters: []Parameter{p}}); err == nil {
			t.Errorf("Encode accepted %+v", p)
		}
	}
}

func TestWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.onnx_adapter")
	if err := Write(path, sample()); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := Encode(sample())
	if !bytes.Equal(got, want) {
		t.Fatal("the written file differs from Encode")
	}
	if err := Write(path, &Adapter{Parameters: []Parameter{{Name: "x"}}}); err == nil {
		t.Fatal("Write accepted an invalid parameter")
	}
}
