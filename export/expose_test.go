package export

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/tensor"
)

// mixedModel: MatMul(x, W), Gemm(y, W2, bias) with transB=1, Conv(img, K)
// plus non-targets (1-D bias, int64 shape, a rank-2 int initializer).
func mixedModel() *onnxwire.Builder {
	b := onnxwire.NewBuilder()
	b.AddInput("x", tensor.Float32, []int64{-1, 4}, "batch")
	b.AddInput("img", tensor.Float32, []int64{1, 1, 5, 5})
	b.AddInitializer(onnxwire.NewTensor("W", tensor.Float32, []int64{4, 3}, seq(12, 1)))
	b.AddInitializer(onnxwire.TensorSpec{Name: "W2", DType: tensor.Float32, Dims: []int64{5, 3}, Float: make([]float32, 15)}.Tensor())
	b.AddInitializer(onnxwire.NewTensor("bias", tensor.Float32, []int64{5}, seq(5, 0)))
	b.AddInitializer(onnxwire.NewTensor("K", tensor.Float32, []int64{2, 1, 3, 3}, seq(18, -9)))
	b.AddInitializer(onnxwire.TensorSpec{Name: "idx", DType: tensor.Int64, Dims: []int64{2, 2}, Int64: []int64{1, 2, 3, 4}}.Tensor())
	b.AddNode("mm", "MatMul", []string{"x", "W"}, []string{"y"})
	b.AddNode("gemm", "Gemm", []string{"y", "W2", "bias"}, []string{"z"}, onnxwire.IntAttr("transB", 1))
	b.AddNode("conv", "Conv", []string{"img", "K"}, []string{"c"}, onnxwire.IntsAttr("kernel_shape", 3, 3))
	b.AddOutput("z", tensor.Float32, []int64{-1, 5}, "batch")
	b.AddOutput("c", tensor.Float32, []int64{1, 2, 3, 3})
	return b
}

func TestExposeMatMulGemmConv(t *testing.T) {
	src := writeModel(t, mixedModel(), t.TempDir())
	out := t.TempDir()
	man, err := Expose(context.Background(), src, out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(man.Names(), ","); got != "W,W2,K" {
		t.Fatalf("exposed %s", got)
	}
	x := checkExport(t, out, man)
	w2 := man.Entry("W2")
	if c := w2.Consumers[0]; c.Node != "gemm" || c.InputIndex != 1 || c.TransB == nil || !*c.TransB || c.TransA == nil || *c.TransA {
		t.Errorf("gemm consumer %+v", c)
	}
	if c := man.Entry("K").Consumers[0]; c.OpType != "Conv" || c.InputIndex != 1 || c.TransB != nil {
		t.Errorf("conv consumer %+v", c)
	}
	if !bytes.Equal(entryBytes(t, out, man.Entry("W")), seq(12, 1)) || !bytes.Equal(entryBytes(t, out, w2), make([]byte, 60)) {
		t.Error("exposed bytes differ from the source")
	}
	// non-targets stay inline and are not inputs
	for _, n := range []string{"bias", "idx"} {
		if x.inits[n] == nil || x.inits[n].IsExternal() || x.ins[n] != nil {
			t.Errorf("%s changed", n)
		}
	}
	if x.ins["x"] == nil || x.ins["img"] == nil {
		t.Error("original inputs lost")
	}
	var bytes int64
	gemms := 0
	for _, e := range man.Tensors {
		bytes += e.Length
		for _, c := range e.Consumers {
			if c.OpType == "Gemm" {
				gemms++
			}
		}
		if e.DType != tensor.Float32 {
			t.Errorf("%s is %v", e.Name, e.DType)
		}
	}
	if len(man.Tensors) != 3 || bytes != 48+60+72 || gemms != 1 {
		t.Errorf("%d tensors, %d bytes, %d Gemm consumers", len(man.Tensors), bytes, gemms)
	}
	py := pythonCheck(t, filepath.Join(out, ModelFile), `
for i in m.graph.initializer:
    print(i.name, numpy_helper.to_array(i).flatten().tolist()[:3])
print("inputs", [i.name for i in m.graph.input])
`)
	if py != "" && (!strings.Contains(py, "W [1.0, 2.0, 3.0]") || !strings.Contains(py, "K [-9.0, -8.0, -7.0]") || !strings.Contains(py, "'W', 'W2', 'K'")) {
		t.Errorf("python view:\n%s", py)
	}
}

func TestExposeFP16BF16(t *testing.T) {
	h := []int32{0x3c00, 0x4000, 0xbc00, 0x7bff, 0x0001, 0x8000}
	hb := []byte{0, 0x3c, 0, 0x40, 0, 0xbc, 0xff, 0x7b, 1, 0, 0, 0x80}
	bf := []byte{0x80, 0x3f, 0, 0x40, 0x80, 0xbf, 0x7f, 0x7f, 1, 0, 0, 0x80}
	b := onnxwire.NewBuilder()
	b.AddInput("x", tensor.Float32, []int64{1, 2})
	b.AddInput("xb", tensor.BFloat16, []int64{1, 2})
	b.AddInitializer(onnxwire.TensorSpec{Name: "H", DType: tensor.Float16, Dims: []int64{2, 3}, Int32: h}.Tensor())
	b.AddInitializer(onnxwire.NewTensor("B", tensor.BFloat16, []int64{2, 3}, bf))
	b.AddNode("cast", "Cast", []string{"H"}, []string{"H32"}, onnxwire.IntAttr("to", int64(tensor.Float32)))
	b.AddNode("mm", "MatMul", []string{"x", "H32"}, []string{"y"})
	b.AddNode("mmb", "MatMul", []string{"xb", "B"}, []string{"yb"})
	b.AddOutput("y", tensor.Float32, []int64{1, 3})
	b.AddOutput("yb", tensor.BFloat16, []int64{1, 3})
	src := writeModel(t, b, t.TempDir())
	out := t.TempDir()
	man, err := Expose(context.Background(), src, out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkExport(t, out, man)
	he, be := man.Entry("H"), man.Entry("B")
	if he == nil || be == nil || he.DType != tensor.Float16 || be.DType != tensor.BFloat16 {
		t.Fatalf("entries %+v", man.Tensors)
	}
	if !bytes.Equal(entryBytes(t, out, he), hb) || !bytes.Equal(entryBytes(t, out, be), bf) {
		t.Error("fp16/bf16 bytes differ")
	}
	if v := he.Consumers[0].Via; len(v) != 1 || v[0].OpType != "Cast" || v[0].Node != "cast" {
		t.Errorf("via %+v", v)
	}
	js, _ := os.ReadFile(filepath.Join(out, ManifestFile))
	if !bytes.Contains(js, []byte(`"dtype": "float16"`)) || !bytes.Contains(js, []byte(`"dtype": "bfloat16"`)) {
		t.Error("dtype not written by name")
	}
	pythonCheck(t, filepath.Join(out, ModelFile), "")
}

func TestTransposeFolding(t *testing.T) {
	b := onnxwire.NewBuilder()
	b.AddInput("x", tensor.Float32, []int64{2, 4})
	b.AddInitializer(onnxwire.NewTensor("W", tensor.Float32, []int64{3, 4}, seq(12, 0))) // [out, in] like torch Linear
	b.AddNode("tr", "Transpose", []string{"W"}, []string{"Wt"}, onnxwire.IntsAttr("perm", 1, 0))
	b.AddNode("mm", "MatMul", []string{"x", "Wt"}, []string{"y"})
	b.AddValueInfo("Wt", tensor.Float32, []int64{4, 3})
	b.AddOutput("y", tensor.Float32, []int64{2, 3})
	src := writeModel(t, b, t.TempDir())
	out := t.TempDir()
	man, err := Expose(context.Background(), src, out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	x := checkExport(t, out, man)
	e := man.Entry("W.T")
	if e == nil || !slices.Equal(e.Shape, []int64{4, 3}) || !slices.Equal(e.Source.Perm, []int64{1, 0}) || e.Source.Name != "W" || !slices.Equal(e.Source.Shape, []int64{3, 4}) {
		t.Fatalf("entry %+v", man.Tensors)
	}
	// W[o][i] = 4o+i ; W.T[i][o] = 4o+i
	want := make([]float32, 12)
	for i := 0; i < 4; i++ {
		for o := 0; o < 3; o++ {
			want[i*3+o] = float32(4*o + i)
		}
	}
	if !bytes.Equal(entryBytes(t, out, e), f32(want...)) {
		t.Error("stored data is not the transpose")
	}
	if x.inits["W"] != nil || x.ins["W"] != nil || len(x.nodes) != 1 || x.nodes[0].Inputs()[1] != "W.T" {
		t.Errorf("graph not rewired: nodes %d", len(x.nodes))
	}
	if vis, _ := x.graph.ValueInfos(); len(vis) != 0 {
		t.Error("stale value_info kept")
	}
	if !slices.Equal(e.Source.FoldedNodes, []string{"tr"}) {
		t.Errorf("folded %v", e.Source.FoldedNodes)
	}
	pythonCheck(t, filepath.Join(out, ModelFile), "onnx.shape_inference.infer_shapes(m, strict_mode=True)\n")
}

func TestTransposeFoldingChain3D(t *testing.T) {
	// K -> Transpose(perm 2,0,1) -> Cast -> Transpose(default) -> MatMul (batched)
	b := onnxwire.NewBuilder()
	b.AddInput("x", tensor.Float16, []int64{3, 4, 5})
	b.AddInitializer(onnxwire.NewTensor("K", tensor.Float32, []int64{2, 3, 4}, seq(24, 0)))
	b.AddNode("t1", "Transpose", []string{"K"}, []string{"k1"}, onnxwire.IntsAttr("perm", 2, 0, 1)) // [4,2,3]
	b.AddNode("c", "Cast", []string{"k1"}, []string{"k2"}, onnxwire.IntAttr("to", int64(tensor.Float16)))
	b.AddNode("t2", "Transpose", []string{"k2"}, []string{"k3"})  // reverse: [3,2,4]
	b.AddNode("mm", "MatMul", []string{"k3", "x"}, []string{"y"}) // the weight as A: [3,2,4] x [3,4,5]
	b.AddOutput("y", tensor.Float16, []int64{3, 2, 5})
	src := writeModel(t, b, t.TempDir())
	out := t.TempDir()
	man, err := Expose(context.Background(), src, out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := man.Entry("K.T")
	if e == nil {
		t.Fatalf("tensors %+v", man.Tensors)
	}
	// composed: perm[i] = p1[p2[i]] with p1=(2,0,1), p2=(2,1,0) -> (1,0,2)
	if !slices.Equal(e.Source.Perm, []int64{1, 0, 2}) || !slices.Equal(e.Shape, []int64{3, 2, 4}) {
		t.Fatalf("perm %v shape %v", e.Source.Perm, e.Shape)
	}
	if c := e.Consumers[0]; c.InputIndex != 0 || len(c.Via) != 1 || c.Via[0].OpType != "Cast" {
		t.Errorf("consumer %+v", c)
	}
	got := entryBytes(t, out, e)
	want, _ := transposeNaive(seq(24, 0), []int64{2, 3, 4}, []int64{1, 0, 2}, 4)
	if !bytes.Equal(got, want) {
		t.Error("3-D transposed data wrong")
	}
	x := checkExport(t, out, man)
	if len(x.nodes) != 2 || x.nodes[0].OpType() != "Cast" || x.nodes[0].Inputs()[0] != "K.T" || x.nodes[1].Inputs()[0] != "k2" {
		t.Errorf("rewiring wrong")
	}
	pythonCheck(t, filepath.Join(out, ModelFile), "onnx.shape_inference.infer_shapes(m, strict_mode=True)\n")
}

func transposeNaive(data []byte, dims, perm []int64, elem int) ([]byte, []int64) {
	rank := len(dims)
	od := make([]int64, rank)
	for i, p := range perm {
		od[i] = dims[p]
	}
	n := len(data) / elem
	out := make([]byte, len(data))
	for o := 0; o < n; o++ {
		// unravel o in od
		rem := int64(o)
		idx := make([]int64, rank)
		for i := rank - 1; i >= 0; i-- {
			idx[i] = rem % od[i]
			rem /= od[i]
		}
		in := make([]int64, rank)
		for i, p := range perm {
			in[p] = idx[i]
		}
		flat := int64(0)
		for i := 0; i < rank; i++ {
			flat = flat*dims[i] + in[i]
		}
		copy(out[o*elem:], data[flat*int64(elem):flat*int64(elem)+int64(elem)])
	}
	return out, od
}

func TestTransposeBytes(t *testing.T) {
	for _, c := range []struct{ dims, perm []int64 }{
		{[]int64{3, 5}, []int64{1, 0}}, {[]int64{2, 3, 4}, []int64{2, 0, 1}}, {[]int64{2, 3, 4, 5}, []int64{3, 1, 0, 2}},
		{[]int64{1, 7}, []int64{1, 0}}, {[]int64{4, 4}, []int64{0, 1}}, {[]int64{0, 3}, []int64{1, 0}},
	} {
		n := int64(1)
		for _, d := range c.dims {
			n *= d
		}
		for _, elem := range []int{2, 4} {
			data := make([]byte, int(n)*elem)
			for i := range data {
				data[i] = byte(i * 7)
			}
			got, err := transposeBytes(data, c.dims, c.perm, elem)
			want, _ := transposeNaive(data, c.dims, c.perm, elem)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%v %v elem %d: %v", c.dims, c.perm, elem, err)
			}
		}
	}
}

func TestTransposeNotFoldedWhenShared(t *testing.T) {
	// tied embedding: E feeds Gather directly and MatMul through Transpose
	b := onnxwire.NewBuilder()
	b.AddInput("ids", tensor.Int64, []int64{2})
	b.AddInitializer(onnxwire.NewTensor("E", tensor.Float32, []int64{5, 4}, seq(20, 0)))
	b.AddNode("gather", "Gather", []string{"E", "ids"}, []string{"h"})
	b.AddNode("tr", "Transpose", []string{"E"}, []string{"Et"}, onnxwire.IntsAttr("perm", 1, 0))
	b.AddNode("lm", "MatMul", []string{"h", "Et"}, []string{"logits"})
	b.AddOutput("logits", tensor.Float32, []int64{2, 5})
	src := writeModel(t, b, t.TempDir())
	out := t.TempDir()
	man, err := Expose(context.Background(), src, out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	x := checkExport(t, out, man)
	e := man.Entry("E")
	if e == nil || e.Source.Perm != nil || len(x.nodes) != 3 {
		t.Fatalf("tensors %+v nodes %d", man.Tensors, len(x.nodes))
	}
	if v := e.Consumers[0].Via; len(v) != 1 || v[0].OpType != "Transpose" {
		t.Errorf("via %+v", v)
	}
	if len(man.Notes) == 0 || !strings.Contains(man.Notes[0], "not folded") {
		t.Errorf("notes %v", man.Notes)
	}
	pythonCheck(t, filepath.Join(out, ModelFile), "")
}

func TestConstantNodeAndSharedWeight(t *testing.T) {
	b := onnxwire.NewBuilder()
	b.AddInput("x", tensor.Float32, []int64{1, 4})
	cw := onnxwire.TensorSpec{Name: "", DType: tensor.Float32, Dims: []int64{4, 4}, Float: make([]float32, 16)}.Tensor()
	b.AddNode("const", "Constant", nil, []string{"C"}, onnxwire.TensorAttr("value", cw))
	b.AddNode("mm1", "MatMul", []string{"x", "C"}, []string{"y1"})
	b.AddNode("mm2", "MatMul", []string{"y1", "C"}, []string{"y2"})
	b.AddOutput("y2", tensor.Float32, []int64{1, 4})
	src := writeModel(t, b, t.TempDir())
	out := t.TempDir()
	man, err := Expose(context.Background(), src, out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	x := checkExport(t, out, man)
	e := man.Entry("C")
	if e == nil || len(man.Tensors) != 1 || !e.Source.FromConstant || len(e.Consumers) != 2 {
		t.Fatalf("tensors %+v", man.Tensors)
	}
	if e.Consumers[0].Node != "mm1" || e.Consumers[1].Node != "mm2" {
		t.Errorf("consumers %+v", e.Consumers)
	}
	for _, n := range x.nodes {
		if n.OpType() == "Constant" {
			t.Error("Constant node kept")
		}
	}
	pythonCheck(t, filepath.Join(out, ModelFile), "")
}

func TestExternalSource(t *testing.T) {
	srcDir := t.TempDir()
	blob := append(make([]byte, 10), seq(12, 100)...) // W at 10
	blob = append(blob, seq(3, 7)...)                 // bias at 58
	if err := os.WriteFile(filepath.Join(srcDir, "weights.bin"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	b := onnxwire.NewBuilder()
	b.AddInput("x", tensor.Float32, []int64{1, 4})
	b.AddInitializer(onnxwire.TensorSpec{Name: "W", DType: tensor.Float32, Dims: []int64{4, 3},
		External: &onnxwire.ExternalData{Location: "weights.bin", Offset: 10, Length: 48}}.Tensor())
	b.AddInitializer(onnxwire.TensorSpec{Name: "bias", DType: tensor.Float32, Dims: []int64{3},
		External: &onnxwire.ExternalData{Location: "weights.bin", Offset: 58, Length: -1}}.Tensor())
	b.AddNode("mm", "MatMul", []string{"x", "W"}, []string{"y"})
	b.AddNode("add", "Add", []string{"y", "bias"}, []string{"z"})
	b.AddOutput("z", tensor.Float32, []int64{1, 3})
	src := writeModel(t, b, srcDir)
	out := t.TempDir()
	man, err := Expose(context.Background(), src, out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(srcDir); err != nil { // out must be self-contained
		t.Fatal(err)
	}
	x := checkExport(t, out, man)
	if !bytes.Equal(entryBytes(t, out, man.Entry("W")), seq(12, 100)) {
		t.Error("exposed external bytes differ")
	}
	if len(man.External) != 1 || man.External[0].Name != "bias" || man.External[0].Offset%DefaultAlignment != 0 {
		t.Fatalf("external %+v", man.External)
	}
	got, err := x.inits["bias"].Data(out)
	if err != nil || !bytes.Equal(got, seq(3, 7)) {
		t.Errorf("bias %v %v", got, err)
	}
	py := pythonCheck(t, filepath.Join(out, ModelFile), "print([numpy_helper.to_array(i).flatten().tolist()[:2] for i in m.graph.initializer])\n")
	if py != "" && !strings.Contains(py, "[[100.0, 101.0], [7.0, 8.0]]") {
		t.Errorf("python: %s", py)
	}
}

func TestTargetsAndErrors(t *testing.T) {
	src := writeModel(t, mixedModel(), t.TempDir())
	man, err := Expose(context.Background(), src, t.TempDir(), Options{Targets: regexp.MustCompile(`^gemm$`)})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(man.Names(), ",") != "W2" {
		t.Errorf("by node name: %v", man.Names())
	}
	man, err = Expose(context.Background(), src, t.TempDir(), Options{Targets: regexp.MustCompile(`^(W|K)$`)})
	if err != nil || strings.Join(man.Names(), ",") != "W,K" {
		t.Errorf("by tensor name: %v %v", man.Names(), err)
	}
	out := t.TempDir()
	_, err = Expose(context.Background(), src, out, Options{Targets: regexp.MustCompile(`nothing`)})
	if !errors.Is(err, ErrNoTargets) || !strings.Contains(err.Error(), "--targets nothing; candidates: W, W2, K") {
		t.Errorf("error %v", err)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Errorf("failed export left files: %v", ents)
	}
	b := onnxwire.NewBuilder()
	b.AddInput("x", tensor.Float32, []int64{2})
	b.AddNode("r", "Relu", []string{"x"}, []string{"y"})
	b.AddOutput("y", tensor.Float32, []int64{2})
	if _, err := Expose(context.Background(), writeModel(t, b, t.TempDir()), t.TempDir(), Options{}); !errors.Is(err, ErrNoTargets) {
		t.Errorf("no candidates: %v", err)
	}
	if _, err := Expose(context.Background(), filepath.Join(t.TempDir(), "missing.onnx"), t.TempDir(), Options{}); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestIRVersionBumpAndSubgraph(t *testing.T) {
	sub := onnxwire.NewBuilder()
	sub.GraphName = "then"
	sub.AddNode("inner", "Identity", []string{"W"}, []string{"t_out"})
	sub.AddOutput("t_out", tensor.Float32, nil)
	b := onnxwire.NewBuilder()
	b.IRVersion = 3
	b.Opsets = []onnxwire.Opset{{Domain: "", Version: 8}}
	b.AddInput("x", tensor.Float32, []int64{1, 2})
	b.AddInput("W", tensor.Float32, []int64{2, 2}) // IR 3: initializers are listed as inputs
	b.AddInput("cond", tensor.Bool, nil)
	b.AddInitializer(onnxwire.NewTensor("W", tensor.Float32, []int64{2, 2}, seq(4, 0)))
	b.AddNode("mm", "MatMul", []string{"x", "W"}, []string{"y"})
	b.AddNode("if", "If", []string{"cond"}, []string{"s"}, onnxwire.GraphAttr("then_branch", sub.Graph()), onnxwire.GraphAttr("else_branch", sub.Graph()))
	b.AddOutput("y", tensor.Float32, []int64{1, 2})
	b.AddOutput("s", tensor.Float32, nil)
	src := writeModel(t, b, t.TempDir())
	out := t.TempDir()
	man, err := Expose(context.Background(), src, out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	x := checkExport(t, out, man)
	if man.IRVersion != 4 || man.IRVersionOriginal != 3 {
		t.Errorf("ir %d from %d", man.IRVersion, man.IRVersionOriginal)
	}
	ins, _ := x.graph.Inputs()
	if len(ins) != 3 {
		t.Errorf("graph inputs duplicated: %d", len(ins))
	}
	// the If node (with its subgraphs) is byte-identical to the source
	srcModel := loadExported(t, src)
	if !bytes.Equal(srcModel.nodes[1].Encode(), x.nodes[1].Encode()) {
		t.Error("subgraph node changed")
	}
	pythonCheck(t, filepath.Join(out, ModelFile), "")
}

func TestReExportIsStable(t *testing.T) {
	src := writeModel(t, mixedModel(), t.TempDir())
	out1, out2 := t.TempDir(), t.TempDir()
	m1, err := Expose(context.Background(), src, out1, Options{})
	if err != nil {
		t.Fatal(err)
	}
	m2, err := Expose(context.Background(), filepath.Join(out1, ModelFile), out2, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if m1.Fingerprint != m2.Fingerprint {
		t.Error("re-export changed the fingerprint")
	}
	x := checkExport(t, out2, m2)
	ins, _ := x.graph.Inputs()
	if len(ins) != 5 {
		t.Errorf("re-export duplicated graph inputs: %d", len(ins))
	}
	// exporting in place (out == source dir) would replace the source:
	// refused, and the directory stays a valid export
	if _, err := Expose(context.Background(), filepath.Join(out2, ModelFile), out2, Options{}); !errors.Is(err, ErrOverwritesInput) {
		t.Fatalf("in-place export: %v, want ErrOverwritesInput", err)
	}
	checkExport(t, out2, m2)
}

func TestConstantTransposeFoldAndUnknownFields(t *testing.T) {
	b := onnxwire.NewBuilder()
	b.AddInput("x", tensor.Float32, []int64{1, 2})
	b.AddNode("const", "Constant", nil, []string{"C"}, onnxwire.TensorAttr("value",
		onnxwire.NewTensor("", tensor.Float32, []int64{3, 2}, seq(6, 0))))
	b.AddNode("tr", "Transpose", []string{"C"}, []string{"Ct"})
	b.AddNode("mm", "MatMul", []string{"x", "Ct"}, []string{"y"})
	b.AddInitializer(onnxwire.NewTensor("U", tensor.Float16, []int64{3, 3}, make([]byte, 18)))
	b.AddNode("mm2", "MatMul", []string{"y", "U"}, []string{"z"})
	b.AddOutput("z", tensor.Float32, []int64{1, 3})
	m := b.Model()
	// vendor fields on the model, the graph and the exposed tensor survive
	m.Append(onnxwire.StringField(1234, "model-extra"))
	g, _ := m.Graph()
	g.Append(onnxwire.StringField(1235, "graph-extra"))
	inits, _ := g.Initializers()
	inits[0].Append(onnxwire.StringField(1236, "tensor-extra"))
	dir := t.TempDir()
	src := filepath.Join(dir, "src.onnx")
	if err := os.WriteFile(src, m.Encode(), 0o644); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	man, err := Expose(context.Background(), src, out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	x := checkExport(t, out, man)
	e := man.Entry("C.T")
	if e == nil || !e.Source.FromConstant || !slices.Equal(e.Shape, []int64{2, 3}) {
		t.Fatalf("tensors %+v", man.Tensors)
	}
	if !bytes.Equal(entryBytes(t, out, e), f32(0, 2, 4, 1, 3, 5)) {
		t.Error("constant not transposed")
	}
	if len(x.nodes) != 2 || x.nodes[0].Inputs()[1] != "C.T" {
		t.Error("Constant/Transpose not removed")
	}
	raw, _ := os.ReadFile(filepath.Join(out, ModelFile))
	for _, s := range []string{"model-extra", "graph-extra", "tensor-extra"} {
		if !bytes.Contains(raw, []byte(s)) {
			t.Errorf("unknown field %q lost", s)
		}
	}
	if u := x.inits["U"]; u.Get(1236) == nil {
		t.Error("unknown field of the exposed tensor lost")
	}
}

// TestSubgraphConsumers: weights read by MatMul/Conv inside If branches
// (silero-vad's layout) are exposed, with the subgraph recorded, and a
// subgraph-local value of the same shape is not mistaken for one.
func TestSubgraphConsumers(t *testing.T) {
	branch := func(name string) *onnxwire.Builder {
		sub := onnxwire.NewBuilder()
		sub.GraphName = name
		sub.AddInitializer(onnxwire.NewTensor("Local", tensor.Float32, []int64{2, 2}, seq(4, 9)))
		sub.AddNode(name+"_mm", "MatMul", []string{"x", "W"}, []string{name + "_h"})
		sub.AddNode(name+"_mm2", "MatMul", []string{name + "_h", "Local"}, []string{name + "_out"})
		sub.AddOutput(name+"_out", tensor.Float32, []int64{1, 2})
		return sub
	}
	b := onnxwire.NewBuilder()
	b.AddInput("x", tensor.Float32, []int64{1, 2})
	b.AddInput("cond", tensor.Bool, nil)
	b.AddInitializer(onnxwire.NewTensor("W", tensor.Float32, []int64{2, 2}, seq(4, 0)))
	b.AddNode("if", "If", []string{"cond"}, []string{"y"},
		onnxwire.GraphAttr("then_branch", branch("then").Graph()), onnxwire.GraphAttr("else_branch", branch("else").Graph()))
	b.AddOutput("y", tensor.Float32, []int64{1, 2})
	src := writeModel(t, b, t.TempDir())
	out := t.TempDir()
	man, err := Expose(context.Background(), src, out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkExport(t, out, man)
	if len(man.Tensors) != 1 || man.Tensors[0].Name != "W" {
		t.Fatalf("exposed %+v, want only W", man.Tensors)
	}
	cons := man.Tensors[0].Consumers
	if len(cons) != 2 || cons[0].Subgraph != "if.then_branch" || cons[1].Subgraph != "if.else_branch" || cons[0].Node != "then_mm" {
		t.Errorf("consumers %+v", cons)
	}
	pythonCheck(t, filepath.Join(out, ModelFile), "")
}

// TestExposeRedeclaresWeightInputs: a weight the source already lists in
// graph.input keeps a declaration that matches it, gets its static shape
// declared when the declaration has symbolic dims or no shape (a note
// says so), and is refused when the declaration contradicts it.
func TestExposeRedeclaresWeightInputs(t *testing.T) {
	declare := func(add func(b *onnxwire.Builder)) string {
		b := onnxwire.NewBuilder()
		b.AddInput("x", tensor.Float32, []int64{-1, 4}, "batch")
		add(b)
		b.AddInitializer(onnxwire.NewTensor("W", tensor.Float32, []int64{4, 3}, seq(12, 1)))
		b.AddNode("mm", "MatMul", []string{"x", "W"}, []string{"y"})
		b.AddOutput("y", tensor.Float32, []int64{-1, 3}, "batch")
		return writeModel(t, b, t.TempDir())
	}
	input := func(dtype tensor.DType, dims []int64, params ...string) func(*onnxwire.Builder) {
		return func(b *onnxwire.Builder) { b.AddInput("W", dtype, dims, params...) }
	}
	noShape := func(b *onnxwire.Builder) {
		v := onnxwire.NewTensorValueInfo("W", tensor.Float32, nil, nil)
		tp, _ := v.Get(onnxwire.ValueInfoType).Message()
		tt, _ := tp.Get(onnxwire.TypeTensorType).Message()
		tt.Remove(onnxwire.TypeTensorShape)
		b.AddInputProto(v)
	}
	noType := func(b *onnxwire.Builder) {
		v := &onnxwire.ValueInfo{Message: &onnxwire.Message{}}
		v.Append(onnxwire.StringField(onnxwire.ValueInfoName, "W"))
		b.AddInputProto(v)
	}
	const now = "; now float32 [4 3], the shape of its initializer"
	for name, c := range map[string]struct {
		add  func(*onnxwire.Builder)
		note string // "" when the declaration is kept
	}{
		"static":   {input(tensor.Float32, []int64{4, 3}), ""},
		"symbolic": {input(tensor.Float32, []int64{-1, -1}, "rows", "cols"), "graph input W was declared float32 [-1 -1]" + now},
		"partial":  {input(tensor.Float32, []int64{4, -1}), "graph input W was declared float32 [4 -1]" + now},
		"no shape": {noShape, "graph input W was declared float32 without a shape" + now},
		"no type":  {noType, "graph input W was declared without a type" + now},
	} {
		out := t.TempDir()
		man, err := Expose(context.Background(), declare(c.add), out, Options{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		checkExport(t, out, man) // the graph input declares the manifest's type
		if got := strings.Join(man.Notes, "\n"); got != c.note {
			t.Errorf("%s: notes %q, want %q", name, got, c.note)
		}
	}
	for name, add := range map[string]func(*onnxwire.Builder){
		"dtype":  input(tensor.Float16, []int64{4, 3}),
		"dim":    input(tensor.Float32, []int64{3, -1}),
		"rank":   input(tensor.Float32, []int64{12}),
		"scalar": func(b *onnxwire.Builder) { b.AddInput("W", tensor.Float32, nil) },
	} {
		out := filepath.Join(t.TempDir(), "out")
		if _, err := Expose(context.Background(), declare(add), out, Options{}); err == nil || !strings.Contains(err.Error(), "graph input \"W\" is declared") {
			t.Errorf("%s: %v, want a refusal", name, err)
		}
	}
}
