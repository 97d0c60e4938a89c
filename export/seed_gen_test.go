package export

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/tensor"
)

// fuzzSeedModels are small hand-built models for the ONNX fuzz targets:
// layouts the shipped models lack, and regressions.
func fuzzSeedModels() map[string][]byte {
	sub := onnxwire.NewBuilder()
	sub.GraphName = "then"
	sub.AddNode("then_conv", "Conv", []string{"img", "K"}, []string{"then_out"})
	sub.AddOutput("then_out", tensor.Float32, []int64{1, 2, 3, 3})
	ifModel := onnxwire.NewBuilder()
	ifModel.AddInput("img", tensor.Float32, []int64{1, 1, 5, 5})
	ifModel.AddInput("cond", tensor.Bool, nil)
	ifModel.AddInitializer(onnxwire.NewTensor("K", tensor.Float32, []int64{2, 1, 3, 3}, seq(18, -9)))
	ifModel.AddNode("if", "If", []string{"cond"}, []string{"y"},
		onnxwire.GraphAttr("then_branch", sub.Graph()), onnxwire.GraphAttr("else_branch", sub.Graph()))
	ifModel.AddOutput("y", tensor.Float32, []int64{1, 2, 3, 3})

	tr := onnxwire.NewBuilder()
	tr.AddInput("x", tensor.Float32, []int64{-1, 3}, "batch")
	tr.AddNode("c", "Constant", nil, []string{"Wc"}, onnxwire.TensorAttr("value",
		onnxwire.TensorSpec{DType: tensor.Float16, Dims: []int64{2, 3}, Int32: []int32{0x3c00, 0, 0x4000, 0, 0x3c00, 0xbc00}}.Tensor()))
	tr.AddNode("t", "Transpose", []string{"Wc"}, []string{"WcT"}, onnxwire.IntsAttr("perm", 1, 0))
	tr.AddNode("cast", "Cast", []string{"WcT"}, []string{"W32"}, onnxwire.IntAttr("to", int64(tensor.Float32)))
	tr.AddNode("mm", "MatMul", []string{"x", "W32"}, []string{"y"})
	tr.AddOutput("y", tensor.Float32, []int64{-1, 2}, "batch")

	// regression: a shape of 2^40 floats backed by one float_data value
	// made the reader allocate 4 TiB before noticing the data was missing
	huge := onnxwire.NewBuilder()
	huge.AddInput("x", tensor.Float32, []int64{1, 1 << 20})
	huge.AddInitializer(onnxwire.TensorSpec{Name: "W", DType: tensor.Float32, Dims: []int64{1 << 20, 1 << 20}, Float: []float32{1}}.Tensor())
	huge.AddNode("mm", "MatMul", []string{"x", "W"}, []string{"y"})
	huge.AddOutput("y", tensor.Float32, []int64{1, 1 << 20})

	// a weight declared as a graph input with symbolic dims
	dyn := externalModel("model.onnx.data")
	dyn.AddInput("W", tensor.Float32, []int64{-1, -1}, "rows", "cols")

	return map[string][]byte{"if_conv": ifModel.Bytes(), "constant_transpose_cast": tr.Bytes(),
		"huge_dims_float_data": huge.Bytes(), "external_4x4": externalModel("model.onnx.data").Bytes(),
		// external data through the links and the FIFO of the fuzz
		// targets' directory (onnxwiretest.UntrustedDir)
		"external_link_inside": externalModel("in.bin").Bytes(), "external_link_out": externalModel("out.bin").Bytes(),
		"external_dir_link_out": externalModel("lnk/secret.bin").Bytes(), "external_chain_out": externalModel("c1").Bytes(),
		"external_fifo": externalModel("fifo").Bytes(),
		// subgraphs nested as deep as allowed, and deeper
		"nested_if_32": deepGemmModel(32).Bytes(), "nested_if_34": deepGemmModel(34).Bytes(),
		"weight_input_dynamic": dyn.Bytes()}
}

// TestWriteFuzzSeeds regenerates the committed seed corpora of FuzzExpose,
// FuzzLoadManifest and internal/onnxwire's FuzzParseModel when SHIRA_WRITE_SEEDS=1.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("SHIRA_WRITE_SEEDS") != "1" {
		t.Skip("set SHIRA_WRITE_SEEDS=1 to regenerate testdata/fuzz/FuzzExpose and ../internal/onnxwire/testdata/fuzz/FuzzParseModel")
	}
	// FuzzLoadManifest: the fp16 export's manifest as is, and with its
	// last entry claiming 2 TiB (fingerprint recomputed): a regression for
	// ReadWeights allocating before checking the weight file's size
	dir := filepath.Join(t.TempDir(), "x")
	m, err := Expose(context.Background(), filepath.Join("..", "models", "testdata", "fp16", "model.onnx"), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	m.Source.Path = "model.onnx"
	good, _ := json.MarshalIndent(m, "", "  ")
	e := &m.Tensors[len(m.Tensors)-1]
	e.Shape = []int64{1 << 20, 1 << 20}
	e.Length = int64(1<<40) * int64(e.DType.Size())
	m.Fingerprint = Fingerprint(m.Tensors)
	huge, _ := json.MarshalIndent(m, "", "  ")
	md := filepath.Join("testdata", "fuzz", "FuzzLoadManifest")
	if err := os.MkdirAll(md, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"fp16": good, "huge_entry": huge} {
		if err := os.WriteFile(filepath.Join(md, name), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, dir := range []string{
		filepath.Join("testdata", "fuzz", "FuzzExpose"),
		filepath.Join("..", "internal", "onnxwire", "testdata", "fuzz", "FuzzParseModel"),
	} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range fuzzSeedModels() {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
