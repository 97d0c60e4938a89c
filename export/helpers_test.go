package export

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/internal/testutil"
	"github.com/shira-ort/shira-ort/tensor"
)

// pythonCheck runs onnx.checker.check_model on path (plus script, with the
// model loaded as m, external data included) using Debian's python3-onnx.
// Without it the test fails under CI=true; elsewhere only the python part
// is skipped (testutil.Python).
func pythonCheck(t *testing.T, path, script string) string {
	t.Helper()
	py, ok := testutil.Python(t, "onnx")
	if !ok {
		t.Log("python3 with onnx not available; skipping the independent check")
		return ""
	}
	src := "import onnx, sys\nonnx.checker.check_model(sys.argv[1])\nm = onnx.load(sys.argv[1])\nfrom onnx import numpy_helper\n" + script
	out, err := exec.Command(py, "-c", src, path).CombinedOutput()
	if err != nil {
		t.Fatalf("python onnx check of %s: %v\n%s", path, err, out)
	}
	return string(out)
}

func f32(v ...float32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

// seq returns n float32 values start, start+1, ... as bytes.
func seq(n int, start float32) []byte {
	v := make([]float32, n)
	for i := range v {
		v[i] = start + float32(i)
	}
	return f32(v...)
}

func shaHex(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func writeModel(t *testing.T, b *onnxwire.Builder, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "src.onnx")
	if err := b.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// loadExported parses DIR/model.onnx and returns its graph pieces.
type exported struct {
	model *onnxwire.Model
	graph *onnxwire.Graph
	inits map[string]*onnxwire.Tensor
	ins   map[string]*onnxwire.ValueInfo
	nodes []*onnxwire.Node
}

func loadExported(t *testing.T, path string) *exported {
	t.Helper()
	m, err := onnxwire.ReadModel(path)
	if err != nil {
		t.Fatal(err)
	}
	g, err := m.Graph()
	if err != nil {
		t.Fatal(err)
	}
	x := &exported{model: m, graph: g, inits: map[string]*onnxwire.Tensor{}, ins: map[string]*onnxwire.ValueInfo{}}
	inits, _ := g.Initializers()
	for _, it := range inits {
		x.inits[it.Name()] = it
	}
	ins, _ := g.Inputs()
	for _, v := range ins {
		x.ins[v.Name()] = v
	}
	x.nodes, _ = g.Nodes()
	return x
}

// checkExport verifies the generic invariants of an exported directory:
// alignment, sha256 of the weight-file bytes, fingerprint, every exposed
// tensor an external initializer that is also a graph input of the right
// type and shape.
func checkExport(t *testing.T, dir string, man *Manifest) *exported {
	t.Helper()
	lm := openT(t, dir)
	loaded := lm.Manifest()
	if loaded.Fingerprint != man.Fingerprint || len(loaded.Tensors) != len(man.Tensors) {
		t.Fatal("manifest on disk differs from the returned one")
	}
	wb, err := os.ReadFile(filepath.Join(dir, WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(wb)%DefaultAlignment != 0 {
		t.Errorf("weight file size %d not a multiple of the alignment", len(wb))
	}
	x := loadExported(t, filepath.Join(dir, ModelFile))
	for _, e := range man.Tensors {
		if e.Offset%DefaultAlignment != 0 {
			t.Errorf("%s: offset %d not aligned", e.Name, e.Offset)
		}
		if got := shaHex(wb[e.Offset : e.Offset+e.Length]); got != e.SHA256 {
			t.Errorf("%s: sha256 mismatch", e.Name)
		}
		it := x.inits[e.Name]
		if it == nil {
			t.Fatalf("%s: not an initializer", e.Name)
		}
		ext, ok, err := it.External()
		if err != nil || !ok || ext.Location != WeightsFile || ext.Offset != e.Offset || ext.Length != e.Length {
			t.Errorf("%s: external data %+v %v %v", e.Name, ext, ok, err)
		}
		v := x.ins[e.Name]
		if v == nil {
			t.Fatalf("%s: not a graph input", e.Name)
		}
		dt, dims, _, ok, err := v.TensorType()
		if err != nil || !ok || dt != e.DType || !slices.Equal(dims, e.Shape) {
			t.Errorf("%s: graph input type %v %v, want %v %v", e.Name, dt, dims, e.DType, e.Shape)
		}
		got, err := it.Data(dir)
		if err != nil || !bytes.Equal(got, wb[e.Offset:e.Offset+e.Length]) {
			t.Errorf("%s: Data via model %v", e.Name, err)
		}
	}
	if ir, _ := x.model.IRVersion(); ir < 4 {
		t.Errorf("ir_version %d", ir)
	}
	return x
}

func entryBytes(t *testing.T, dir string, e *TensorEntry) []byte {
	t.Helper()
	wb, err := os.ReadFile(filepath.Join(dir, WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	return wb[e.Offset : e.Offset+e.Length]
}

var _ = tensor.Float32

// openT opens an exported directory for a test (closed when it ends).
func openT(tb testing.TB, dir string) *Model {
	tb.Helper()
	m, err := Open(dir)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

// externalModel is y = x·W with W [4, 4] float32 external at loc.
func externalModel(loc string) *onnxwire.Builder {
	b := onnxwire.NewBuilder()
	b.AddInput("x", tensor.Float32, []int64{-1, 4}, "batch")
	b.AddInitializer(onnxwire.TensorSpec{Name: "W", DType: tensor.Float32, Dims: []int64{4, 4},
		External: &onnxwire.ExternalData{Location: loc, Length: 64}}.Tensor())
	b.AddNode("mm", "MatMul", []string{"x", "W"}, []string{"y"})
	b.AddOutput("y", tensor.Float32, []int64{-1, 4}, "batch")
	return b
}
