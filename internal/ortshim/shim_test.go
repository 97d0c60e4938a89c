package ortshim_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	onnxruntime "github.com/yalue/onnxruntime_go"

	"github.com/shira-ort/shira-ort/internal/ortshim"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/tensor"
)

var mlpDir = filepath.Join("..", "..", "ort", "testdata", "mlp")

// TestModuleVersionPinned: the layout mirrors and api_index.h are only
// valid for the pinned onnxruntime_go version, which go.mod must select.
// (Test binaries carry no dependency build info, so ask the go command.)
func TestModuleVersionPinned(t *testing.T) {
	h, err := os.ReadFile("api_index.h")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(h), `SHIM_ONNXRUNTIME_GO_VERSION "`+ortshim.PinnedModuleVersion+`"`) {
		t.Fatalf("api_index.h was not generated from onnxruntime_go %s; run go generate ./internal/ortshim", ortshim.PinnedModuleVersion)
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not in PATH")
	}
	out, err := exec.Command(goCmd, "list", "-m", "-f", "{{.Version}}", "github.com/yalue/onnxruntime_go").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	if v := strings.TrimSpace(string(out)); v != ortshim.PinnedModuleVersion {
		t.Fatalf("go.mod selects onnxruntime_go %s, the mirrors are for %s", v, ortshim.PinnedModuleVersion)
	}
}

// TestSessionOptionsMirror: the OrtSessionOptions* taken through the mirror
// is the one onnxruntime_go configures.
func TestSessionOptionsMirror(t *testing.T) {
	orttest.Require(t)
	so, err := onnxruntime.NewSessionOptions()
	if err != nil {
		t.Fatal(err)
	}
	defer so.Destroy()
	const key = "session.shira_ort_mirror_check"
	if has, err := ortshim.HasSessionConfigEntry(ortshim.SessionOptionsPtr(so), key); err != nil || has {
		t.Fatalf("before: has=%v err=%v", has, err)
	}
	if err := so.AddSessionConfigEntry(key, "1"); err != nil {
		t.Fatal(err)
	}
	if has, err := ortshim.HasSessionConfigEntry(ortshim.SessionOptionsPtr(so), key); err != nil || !has {
		t.Fatalf("after: has=%v err=%v", has, err)
	}
}

// TestValueMirror: the OrtValue* taken through the mirror describes the
// onnxruntime_go tensor and points at its Go data.
func TestValueMirror(t *testing.T) {
	orttest.Require(t)
	data := make([]byte, 2*3*2)
	v, err := onnxruntime.NewCustomDataTensor(onnxruntime.NewShape(2, 3), data, onnxruntime.TensorElementDataTypeFloat16)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Destroy()
	view, err := ortshim.View(ortshim.ValuePtr(v))
	if err != nil {
		t.Fatal(err)
	}
	if view.DType != tensor.Float16 || len(view.Shape) != 2 || view.Shape[0] != 2 || view.Shape[1] != 3 || view.Count != 6 {
		t.Fatalf("view = %+v", view)
	}
	if view.Data != unsafe.Pointer(&data[0]) {
		t.Fatal("the OrtValue does not point at the Go data")
	}
}

// TestSessionMirror: counts and names read through the mirrored OrtSession*
// agree with what onnxruntime_go reports, and the overridable initializers
// (the exposed weights) are listed separately.
func TestSessionMirror(t *testing.T) {
	orttest.Require(t)
	model := filepath.Join(mlpDir, "model.onnx")
	ins, outs, err := onnxruntime.GetInputOutputInfo(model)
	if err != nil {
		t.Fatal(err)
	}
	s, err := onnxruntime.NewDynamicAdvancedSession(model, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Destroy()
	raw := ortshim.SessionPtr(s)
	for _, c := range []struct {
		kind ortshim.Kind
		want []onnxruntime.InputOutputInfo
	}{{ortshim.Inputs, ins}, {ortshim.Outputs, outs}} {
		got, err := ortshim.Describe(raw, c.kind)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(c.want) {
			t.Fatalf("%v: shim sees %d, onnxruntime_go %d", c.kind, len(got), len(c.want))
		}
		for i := range got {
			if got[i].Name != c.want[i].Name || int(got[i].DType) != int(c.want[i].DataType) || len(got[i].Shape) != len(c.want[i].Dimensions) {
				t.Fatalf("%v %d: shim %+v, onnxruntime_go %+v", c.kind, i, got[i], c.want[i])
			}
		}
	}
	over, err := ortshim.Describe(raw, ortshim.Overridables)
	if err != nil {
		t.Fatal(err)
	}
	if len(over) != 2 || over[0].Name != "W1" || over[1].Name != "W2" || over[0].DType != tensor.Float32 || over[1].Shape[0] != 16 {
		t.Fatalf("overridable initializers = %+v", over)
	}
}

// TestRunAndRunOptionsMirror: Run through the shim with run options made
// by onnxruntime_go (mirror) and by the shim, and with a rank-0 input.
func TestRunAndRunOptionsMirror(t *testing.T) {
	orttest.Require(t)
	s, err := onnxruntime.NewDynamicAdvancedSession(filepath.Join(mlpDir, "model.onnx"), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Destroy()
	x := make([]float32, 8)
	x[0] = 1
	xv, err := ortshim.NewTensorValue(tensor.Bytes(x), tensor.Float32, []int64{1, 8})
	if err != nil {
		t.Fatal(err)
	}
	defer ortshim.ReleaseValue(xv)
	in, out := ortshim.NewNames([]string{"X"}), ortshim.NewNames([]string{"Y"})
	defer in.Free()
	defer out.Free()

	goRO, err := onnxruntime.NewRunOptions()
	if err != nil {
		t.Fatal(err)
	}
	defer goRO.Destroy()
	if err := ortshim.AddRunConfigEntry(ortshim.RunOptionsPtr(goRO), "memory.enable_memory_arena_shrinkage", "cpu:0"); err != nil {
		t.Fatal(err)
	}
	shimRO, err := ortshim.NewRunOptions(map[string]string{"memory.enable_memory_arena_shrinkage": "cpu:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer ortshim.ReleaseRunOptions(shimRO)

	var first []byte
	for _, ro := range []unsafe.Pointer{nil, ortshim.RunOptionsPtr(goRO), shimRO} {
		res, err := ortshim.Run(ortshim.SessionPtr(s), ro, in, []unsafe.Pointer{xv}, out)
		if err != nil {
			t.Fatal(err)
		}
		y := res[0]
		if y.DType != tensor.Float32 || len(y.Shape) != 2 || y.Shape[0] != 1 || y.Shape[1] != 4 {
			t.Fatalf("Y = %v %v", y.DType, y.Shape)
		}
		if first == nil {
			first = y.Data
		} else if string(first) != string(y.Data) {
			t.Fatal("run options changed the result")
		}
	}
	if _, err := ortshim.Run(ortshim.SessionPtr(s), nil, in, nil, out); err == nil {
		t.Fatal("Run accepted a missing input value")
	}
}

func TestScalarTensorValue(t *testing.T) {
	orttest.Require(t)
	b := tensor.Bytes([]int64{7})
	v, err := ortshim.NewTensorValue(b, tensor.Int64, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ortshim.ReleaseValue(v)
	c, err := ortshim.Copy(v)
	if err != nil {
		t.Fatal(err)
	}
	if c.DType != tensor.Int64 || len(c.Shape) != 0 || tensor.Int64s(c.Data)[0] != 7 {
		t.Fatalf("copy = %+v", c)
	}
	e, err := ortshim.NewTensorValue(nil, tensor.Float32, []int64{0, 3})
	if err != nil {
		t.Fatalf("empty tensor: %v", err)
	}
	defer ortshim.ReleaseValue(e)
	if c, err := ortshim.Copy(e); err != nil || len(c.Data) != 0 || c.Shape[1] != 3 {
		t.Fatalf("empty copy = %+v, %v", c, err)
	}
}
