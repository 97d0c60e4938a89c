package onnxwire

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/internal/testutil"
	"github.com/shira-ort/shira-ort/tensor"
	"google.golang.org/protobuf/encoding/protowire"
)

// pythonCheck runs onnx.checker.check_model (and a python script, when
// given) on path with Debian's python3-onnx. Without it the test fails
// under CI=true and is skipped elsewhere (testutil.Python).
func pythonCheck(t *testing.T, path, script string) string {
	t.Helper()
	py, ok := testutil.Python(t, "onnx")
	if !ok {
		t.Skip("python3 with onnx not available (apt-get install python3-onnx)")
	}
	src := "import onnx, sys\nonnx.checker.check_model(sys.argv[1])\nm = onnx.load(sys.argv[1])\n" + script
	out, err := exec.Command(py, "-c", src, path).CombinedOutput()
	if err != nil {
		t.Fatalf("python onnx check of %s: %v\n%s", path, err, out)
	}
	return string(out)
}

func f32bytes(v ...float32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

func sampleBuilder() *Builder {
	b := NewBuilder()
	b.AddInput("x", tensor.Float32, []int64{-1, 2}, "batch")
	b.AddInitializer(NewTensor("W", tensor.Float32, []int64{2, 3}, f32bytes(1, 2, 3, 4, 5, 6)))
	b.AddNode("mm", "MatMul", []string{"x", "W"}, []string{"y"})
	b.AddNode("g", "Gemm", []string{"y", "W2", ""}, []string{"z"}, IntAttr("transB", 1), FloatAttr("alpha", 1.5))
	b.AddInitializer(TensorSpec{Name: "W2", DType: tensor.Float32, Dims: []int64{4, 3}, Float: make([]float32, 12)}.Tensor())
	b.AddOutput("z", tensor.Float32, []int64{-1, 4}, "batch")
	return b
}

func TestBuilderPythonCheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.onnx")
	if err := sampleBuilder().WriteFile(path); err != nil {
		t.Fatal(err)
	}
	out := pythonCheck(t, path, `
from onnx import numpy_helper
for i in m.graph.initializer:
    print(i.name, numpy_helper.to_array(i).flatten().tolist())
n = m.graph.node[1]
print(n.op_type, [(a.name, onnx.helper.get_attribute_value(a)) for a in n.attribute])
print(m.graph.input[0].type.tensor_type.shape.dim[0].dim_param)
`)
	for _, want := range []string{"W [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]", "W2 [0.0,", "Gemm [('transB', 1), ('alpha', 1.5)]", "batch"} {
		if !strings.Contains(out, want) {
			t.Errorf("python output lacks %q:\n%s", want, out)
		}
	}
}

func TestRoundTripUnknownFields(t *testing.T) {
	m := sampleBuilder().Model()
	g, _ := m.Graph()
	// unknown fields at every level, including a non-minimal varint and a
	// fixed64, and a group
	g.Append(&Field{Num: 999, Type: protowire.VarintType, val: []byte{0x81, 0x80, 0x00}})
	m.Append(&Field{Num: 777, Type: protowire.Fixed64Type, val: make([]byte, 8)})
	nodes, _ := g.Nodes()
	nodes[0].Append(BytesField(4242, []byte("vendor")))
	orig := m.Encode()
	// hand-append a non-minimal tag + group at top level
	orig = protowire.AppendTag(orig, 555, protowire.StartGroupType)
	orig = protowire.AppendTag(orig, 1, protowire.VarintType)
	orig = protowire.AppendVarint(orig, 7)
	orig = protowire.AppendTag(orig, 555, protowire.EndGroupType)

	p, err := ParseModel(orig, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Encode(); !bytes.Equal(got, orig) {
		t.Fatal("parse→encode is not byte identical")
	}
	// touching every accessor must not change the bytes
	g2, _ := p.Graph()
	ns, _ := g2.Nodes()
	for _, n := range ns {
		n.Attributes()
		_ = n.Inputs()
	}
	inits, _ := g2.Initializers()
	for _, it := range inits {
		if _, err := it.Data(""); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := p.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), orig) || p.Modified() {
		t.Fatal("reading accessors changed the encoding")
	}
	// edit one node input: everything else keeps its bytes
	if err := ns[0].SetInput(1, "W_renamed"); err != nil {
		t.Fatal(err)
	}
	enc := p.Encode()
	if !bytes.Contains(enc, []byte("W_renamed")) || !bytes.Contains(enc, []byte("vendor")) {
		t.Fatal("edit lost")
	}
	q, err := ParseModel(enc, "")
	if err != nil {
		t.Fatal(err)
	}
	qg, _ := q.Graph()
	qn, _ := qg.Nodes()
	if in := qn[0].Inputs(); in[1] != "W_renamed" || in[0] != "x" {
		t.Fatalf("inputs %v", in)
	}
	// unknown fields survive in order
	if f := q.Fields()[len(q.Fields())-1]; f.Num != 555 {
		t.Fatalf("last field %d", f.Num)
	}
	if qg.Get(999) == nil || !bytes.Equal(qg.Get(999).enc[2:], []byte{0x81, 0x80, 0x00}) {
		t.Fatal("graph unknown field changed")
	}
}

func TestTensorEncodings(t *testing.T) {
	h := []int32{0x3c00, 0xc000, 0x7bff, 0x0001} // fp16 1, -2, max, tiny
	cases := []struct {
		spec TensorSpec
		want []byte
	}{
		{TensorSpec{Name: "raw", DType: tensor.Float32, Dims: []int64{2}, Raw: f32bytes(1, 2)}, f32bytes(1, 2)},
		{TensorSpec{Name: "fd", DType: tensor.Float32, Dims: []int64{2, 1}, Float: []float32{3, -4}}, f32bytes(3, -4)},
		{TensorSpec{Name: "h", DType: tensor.Float16, Dims: []int64{2, 2}, Int32: h}, []byte{0, 0x3c, 0, 0xc0, 0xff, 0x7b, 1, 0}},
		{TensorSpec{Name: "bf", DType: tensor.BFloat16, Dims: []int64{1}, Int32: []int32{0x3f80}}, []byte{0x80, 0x3f}},
		{TensorSpec{Name: "i32", DType: tensor.Int32, Dims: []int64{2}, Int32: []int32{-1, 5}}, []byte{255, 255, 255, 255, 5, 0, 0, 0}},
		{TensorSpec{Name: "i64", DType: tensor.Int64, Dims: []int64{1}, Int64: []int64{-2}}, []byte{0xfe, 255, 255, 255, 255, 255, 255, 255}},
		{TensorSpec{Name: "f64", DType: tensor.Float64, Dims: []int64{1}, F64: []float64{1}}, binary.LittleEndian.AppendUint64(nil, math.Float64bits(1))},
	}
	b := NewBuilder()
	for _, c := range cases {
		tp := c.spec.Tensor()
		got, err := tp.Data("")
		if err != nil {
			t.Fatalf("%s: %v", c.spec.Name, err)
		}
		if !bytes.Equal(got, c.want) {
			t.Errorf("%s: got %v want %v", c.spec.Name, got, c.want)
		}
		b.AddInitializer(tp)
	}
	// unpacked float_data (fixed32 occurrences) is accepted too
	tp := &Tensor{&Message{}}
	tp.Append(VarintField(TensorDims, 2))
	tp.Append(VarintField(TensorDataType, uint64(tensor.Float32)))
	tp.Append(Fixed32Field(TensorFloatData, math.Float32bits(7)))
	tp.Append(Fixed32Field(TensorFloatData, math.Float32bits(8)))
	if got, err := tp.Data(""); err != nil || !bytes.Equal(got, f32bytes(7, 8)) {
		t.Fatalf("unpacked float_data: %v %v", got, err)
	}
	// size mismatch is an error, not a panic
	bad := TensorSpec{Name: "bad", DType: tensor.Float32, Dims: []int64{3}, Raw: f32bytes(1)}.Tensor()
	if _, err := bad.Data(""); err == nil {
		t.Fatal("want size error")
	}
	// python reads our encodings identically
	b.AddNode("n", "Identity", []string{"raw"}, []string{"o"})
	b.AddOutput("o", tensor.Float32, []int64{2})
	path := filepath.Join(t.TempDir(), "enc.onnx")
	if err := b.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	out := pythonCheck(t, path, `
from onnx import numpy_helper
for i in m.graph.initializer:
    print(i.name, numpy_helper.to_array(i).tobytes().hex())
`)
	for _, c := range cases {
		want := c.spec.Name + " " + hexs(c.want)
		if c.spec.DType == tensor.BFloat16 {
			want = "bf 0000803f" // onnx 1.12's numpy_helper widens bfloat16 to float32
		}
		if !strings.Contains(out, want) {
			t.Errorf("python: want %q in\n%s", want, out)
		}
	}
}

func hexs(b []byte) string {
	const digits = "0123456789abcdef"
	var s strings.Builder
	for _, c := range b {
		s.WriteByte(digits[c>>4])
		s.WriteByte(digits[c&15])
	}
	return s.String()
}

func TestExternalData(t *testing.T) {
	dir := t.TempDir()
	data := append(make([]byte, 100), f32bytes(1, 2, 3, 4)...)
	if err := os.WriteFile(filepath.Join(dir, "w.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	b := NewBuilder()
	b.AddInitializer(TensorSpec{Name: "E", DType: tensor.Float32, Dims: []int64{2, 2},
		External: &ExternalData{Location: "w.bin", Offset: 100, Length: 16}}.Tensor())
	b.AddInput("x", tensor.Float32, []int64{2, 2})
	b.AddNode("mm", "MatMul", []string{"x", "E"}, []string{"y"})
	b.AddOutput("y", tensor.Float32, []int64{2, 2})
	path := filepath.Join(dir, "m.onnx")
	if err := b.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	m, err := ReadModel(path)
	if err != nil {
		t.Fatal(err)
	}
	g, _ := m.Graph()
	inits, _ := g.Initializers()
	got, err := inits[0].Data(m.Dir)
	if err != nil || !bytes.Equal(got, f32bytes(1, 2, 3, 4)) {
		t.Fatalf("external: %v %v", got, err)
	}
	out := pythonCheck(t, path, "from onnx import numpy_helper\nprint(numpy_helper.to_array(m.graph.initializer[0]).flatten().tolist())\n")
	if !strings.Contains(out, "[1.0, 2.0, 3.0, 4.0]") {
		t.Fatalf("python external read: %s", out)
	}
	// escaping locations are refused; short files are errors
	for _, loc := range []string{"../w.bin", "/etc/passwd"} {
		tp := TensorSpec{Name: "x", DType: tensor.Float32, Dims: []int64{1}, External: &ExternalData{Location: loc, Length: -1}}.Tensor()
		if _, err := tp.Data(dir); err == nil {
			t.Errorf("location %q accepted", loc)
		}
	}
	tp := TensorSpec{Name: "x", DType: tensor.Float32, Dims: []int64{100}, External: &ExternalData{Location: "w.bin", Length: -1}}.Tensor()
	if _, err := tp.Data(dir); err == nil {
		t.Error("short external file accepted")
	}
}

func TestSubgraphPreservedAndWalked(t *testing.T) {
	sub := NewBuilder()
	sub.GraphName = "then"
	sub.AddNode("inner", "MatMul", []string{"x", "W"}, []string{"t_out"})
	sub.AddInitializer(NewTensor("inner_c", tensor.Float32, []int64{1}, f32bytes(9)))
	sub.AddOutput("t_out", tensor.Float32, nil)
	b := NewBuilder()
	b.AddInput("x", tensor.Float32, []int64{2, 2})
	b.AddInput("cond", tensor.Bool, nil)
	b.AddInitializer(NewTensor("W", tensor.Float32, []int64{2, 2}, f32bytes(1, 2, 3, 4)))
	b.AddNode("if", "If", []string{"cond"}, []string{"y"}, GraphAttr("then_branch", sub.Graph()), GraphAttr("else_branch", sub.Graph()))
	b.AddOutput("y", tensor.Float32, nil)
	raw := b.Bytes()
	m, err := ParseModel(raw, "")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	if err := m.WalkTensors(func(tp *Tensor) error { names = append(names, tp.Name()); return nil }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, ",") != "inner_c,inner_c,W" {
		t.Fatalf("walk visited %v", names)
	}
	g, _ := m.Graph()
	refs, err := g.SubgraphReferences()
	if err != nil || !refs["W"] || !refs["x"] {
		t.Fatalf("refs %v %v", refs, err)
	}
	if !bytes.Equal(m.Encode(), raw) {
		t.Fatal("walking changed bytes")
	}
}
