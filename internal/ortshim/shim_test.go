package ortshim_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	onnxruntime "github.com/yalue/onnxruntime_go"

	"github.com/shira-ort/shira-ort/internal/ortshim"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/tensor"
)

var (
	mlpDir   = filepath.Join("..", "..", "ort", "testdata", "mlp")
	mlpModel = filepath.Join(mlpDir, "model.onnx")
)

// TestAPIIndexUpToDate: api_index.h is what gen writes from the ORT header
// of the onnxruntime_go version go.mod selects (run `go generate
// ./internal/ortshim` after bumping it). Needs the go command and a C
// compiler, like any cgo build.
func TestAPIIndexUpToDate(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not in PATH")
	}
	out := filepath.Join(t.TempDir(), "api_index.h")
	if b, err := exec.Command(goCmd, "run", "./gen", "-o", out).CombinedOutput(); err != nil {
		t.Fatalf("go run ./gen: %v\n%s", err, b)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("api_index.h")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("api_index.h is stale (header of onnxruntime_go %s in the file); run go generate ./internal/ortshim", ortshim.HeaderModule)
	}
	if !strings.Contains(string(got), `SHIM_ONNXRUNTIME_GO_VERSION "`+ortshim.HeaderModule+`"`) {
		t.Fatal("HeaderModule does not match api_index.h")
	}
}

// TestEnvShared: ORT's CreateEnv hands the shim the environment
// onnxruntime_go created (one per process), and taking and dropping a
// reference leaves it usable.
func TestEnvShared(t *testing.T) {
	orttest.Require(t)
	for range 3 {
		if !ortshim.EnvShared() {
			t.Fatal("CreateEnv returned another environment")
		}
	}
	s, err := ortshim.NewSession(mlpModel, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	runMLP(t, s, nil)
}

// runMLP runs the mlp model on a fixed input and returns Y's bytes.
func runMLP(t *testing.T, s *ortshim.Session, ro *ortshim.RunOptions) []byte {
	t.Helper()
	y, err := tryRunMLP(s, ro)
	if err != nil {
		t.Fatal(err)
	}
	return y
}

func tryRunMLP(s *ortshim.Session, ro *ortshim.RunOptions) ([]byte, error) {
	x := make([]float32, 2*8)
	for i := range x {
		x[i] = float32(i%5) - 2
	}
	var pin runtime.Pinner // Go memory under an OrtValue must stay put
	defer pin.Unpin()
	pin.Pin(&x[0])
	xv, err := ortshim.NewTensorValue(tensor.Bytes(x), tensor.Float32, []int64{2, 8})
	if err != nil {
		return nil, err
	}
	defer xv.Release()
	in, out := ortshim.NewNames([]string{"X"}), ortshim.NewNames([]string{"Y"})
	defer in.Free()
	defer out.Free()
	res, err := s.Run(ro, in, []*ortshim.Value{xv}, out)
	if err != nil {
		return nil, err
	}
	if y := res[0]; y.DType != tensor.Float32 || len(y.Shape) != 2 || y.Shape[0] != 2 || y.Shape[1] != 4 {
		return nil, fmt.Errorf("Y is %v %v", y.DType, y.Shape)
	}
	return res[0].Data, nil
}

// TestSessionOptions: configuration entries round-trip, and the setters
// accept ORT's values.
func TestSessionOptions(t *testing.T) {
	orttest.Require(t)
	so, err := ortshim.NewSessionOptions()
	if err != nil {
		t.Fatal(err)
	}
	defer so.Release()
	const key = "session.shira_ort_check"
	if has, err := so.HasConfigEntry(key); err != nil || has {
		t.Fatalf("before: has=%v err=%v", has, err)
	}
	if err := so.AddConfigEntry(key, "1"); err != nil {
		t.Fatal(err)
	}
	if has, err := so.HasConfigEntry(key); err != nil || !has {
		t.Fatalf("after: has=%v err=%v", has, err)
	}
	for _, err := range []error{
		so.SetIntraOpThreads(1), so.SetInterOpThreads(1),
		so.SetOptimizationLevel(ortshim.OptimizeDisableAll), so.SetOptimizationLevel(ortshim.OptimizeBasic),
		so.SetOptimizationLevel(ortshim.OptimizeExtended), so.SetOptimizationLevel(ortshim.OptimizeAll),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if so.SetIntraOpThreads(-1) == nil || so.SetInterOpThreads(-1) == nil {
		t.Fatal("negative thread count accepted")
	}
	s, err := ortshim.NewSession(mlpModel, so)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	runMLP(t, s, nil)
}

// TestDescribe: counts and names read by the shim agree with what
// onnxruntime_go (an independent reader of the same C API) reports, and
// the overridable initializers (the exposed weights) are listed
// separately.
func TestDescribe(t *testing.T) {
	orttest.Require(t)
	ins, outs, err := onnxruntime.GetInputOutputInfo(mlpModel)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ortshim.NewSession(mlpModel, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	for _, c := range []struct {
		kind ortshim.Kind
		want []onnxruntime.InputOutputInfo
	}{{ortshim.Inputs, ins}, {ortshim.Outputs, outs}} {
		got, err := s.Describe(c.kind)
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
	over, err := s.Describe(ortshim.Overridables)
	if err != nil {
		t.Fatal(err)
	}
	if len(over) != 2 || over[0].Name != "W1" || over[1].Name != "W2" || over[0].DType != tensor.Float32 || over[1].Shape[0] != 16 {
		t.Fatalf("overridable initializers = %+v", over)
	}
	if n, err := s.Count(ortshim.Overridables); err != nil || n != 2 {
		t.Fatalf("Count(Overridables) = %d, %v", n, err)
	}
}

// TestSessionFromBytesMatchesPath: a session created from the model's
// bytes computes what the one created from its path does. The model's
// weights are external data, found through the folder configuration entry
// for the in-memory model.
func TestSessionFromBytesMatchesPath(t *testing.T) {
	orttest.Require(t)
	fromPath, err := ortshim.NewSession(mlpModel, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fromPath.Release()
	model, err := os.ReadFile(mlpModel)
	if err != nil {
		t.Fatal(err)
	}
	so, err := ortshim.NewSessionOptions()
	if err != nil {
		t.Fatal(err)
	}
	defer so.Release()
	if err := so.AddConfigEntry("session.model_external_initializers_file_folder_path", mlpDir); err != nil {
		t.Fatal(err)
	}
	fromBytes, err := ortshim.NewSessionFromBytes(model, so)
	if err != nil {
		t.Fatal(err)
	}
	defer fromBytes.Release()
	a, b := runMLP(t, fromPath, nil), runMLP(t, fromBytes, nil)
	if !bytes.Equal(a, b) {
		t.Fatal("the sessions from the path and from the bytes disagree")
	}
	if _, err := ortshim.NewSessionFromBytes(nil, nil); err == nil {
		t.Fatal("empty model accepted")
	}
	if _, err := ortshim.NewSessionFromBytes([]byte("not a model"), nil); err == nil {
		t.Fatal("garbage model accepted")
	}
	if _, err := ortshim.NewSession(filepath.Join(t.TempDir(), "missing.onnx"), nil); err == nil {
		t.Fatal("missing model accepted")
	}
}

// TestRunOptions: Runs without run options, with configuration entries,
// and after SetTerminate (fails) / UnsetTerminate (runs again) agree.
func TestRunOptions(t *testing.T) {
	orttest.Require(t)
	s, err := ortshim.NewSession(mlpModel, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	want := runMLP(t, s, nil)
	ro, err := ortshim.NewRunOptions(map[string]string{"memory.enable_memory_arena_shrinkage": "cpu:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Release()
	if got := runMLP(t, s, ro); !bytes.Equal(got, want) {
		t.Fatal("run options changed the result")
	}
	if err := ro.SetTerminate(); err != nil {
		t.Fatal(err)
	}
	if _, err := tryRunMLP(s, ro); err == nil {
		t.Fatal("Run with SetTerminate set succeeded")
	} else {
		t.Logf("terminated: %v", err)
	}
	if err := ro.UnsetTerminate(); err != nil {
		t.Fatal(err)
	}
	if got := runMLP(t, s, ro); !bytes.Equal(got, want) {
		t.Fatal("Run after UnsetTerminate differs")
	}
}

// TestRunChecks: Run refuses a missing input value and mismatched names
// before calling ORT.
func TestRunChecks(t *testing.T) {
	orttest.Require(t)
	s, err := ortshim.NewSession(mlpModel, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	in, out := ortshim.NewNames([]string{"X"}), ortshim.NewNames([]string{"Y"})
	defer in.Free()
	defer out.Free()
	if _, err := s.Run(nil, in, nil, out); err == nil {
		t.Fatal("Run accepted a missing input value")
	}
	if _, err := s.Run(nil, in, []*ortshim.Value{nil}, out); err == nil {
		t.Fatal("Run accepted a nil input value")
	}
	if _, err := s.Run(nil, in, nil, ortshim.NewNames(nil)); err == nil {
		t.Fatal("Run accepted no outputs")
	}
}

// TestReleaseIsSafe: every handle's Release is a no-op on nil and when
// repeated, and methods on a released handle return an error instead of
// handing ORT a null pointer.
func TestReleaseIsSafe(t *testing.T) {
	orttest.Require(t)
	(*ortshim.Session)(nil).Release()
	(*ortshim.SessionOptions)(nil).Release()
	(*ortshim.RunOptions)(nil).Release()
	(*ortshim.Value)(nil).Release()
	(*ortshim.LoraAdapter)(nil).Release()
	(*ortshim.Names)(nil).Free()

	so, err := ortshim.NewSessionOptions()
	if err != nil {
		t.Fatal(err)
	}
	so.Release()
	so.Release()
	if err := so.AddConfigEntry("k", "v"); err == nil {
		t.Error("released SessionOptions accepted AddConfigEntry")
	}
	if _, err := ortshim.NewSession(mlpModel, so); err == nil {
		t.Error("NewSession accepted released SessionOptions")
	}

	ro, err := ortshim.NewRunOptions(nil)
	if err != nil {
		t.Fatal(err)
	}
	ro.Release()
	ro.Release()
	if err := ro.SetTerminate(); err == nil {
		t.Error("released RunOptions accepted SetTerminate")
	}

	v, err := ortshim.NewTensorValue(tensor.Bytes([]float32{1, 2}), tensor.Float32, []int64{2})
	if err != nil {
		t.Fatal(err)
	}
	v.Release()
	v.Release()
	if _, err := v.Copy(); err == nil {
		t.Error("released Value copied")
	}

	s, err := ortshim.NewSession(mlpModel, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Release()
	s.Release()
	if _, err := s.Describe(ortshim.Inputs); err == nil {
		t.Error("released Session described")
	}
	if _, err := tryRunMLP(s, nil); err == nil {
		t.Error("released Session ran")
	}
	if _, err := s.EndProfiling(); err == nil {
		t.Error("released Session ended profiling")
	}

	n := ortshim.NewNames([]string{"a"})
	n.Free()
	n.Free()
	// LoraAdapter: see TestLoraAdapterRelease (needs an adapter file).
}

// TestValueView: a tensor value points at the caller's memory and reports
// its element type and shape.
func TestValueView(t *testing.T) {
	orttest.Require(t)
	data := make([]byte, 2*3*2)
	v, err := ortshim.NewTensorValue(data, tensor.Float16, []int64{2, 3})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Release()
	view, err := v.View()
	if err != nil {
		t.Fatal(err)
	}
	if view.DType != tensor.Float16 || len(view.Shape) != 2 || view.Shape[0] != 2 || view.Shape[1] != 3 || view.Count != 6 {
		t.Fatalf("view = %+v", view)
	}
	if view.Data != unsafe.Pointer(&data[0]) {
		t.Fatal("the value does not point at the caller's data")
	}
	if _, err := ortshim.NewTensorValue(data, tensor.Float16, []int64{2, 2}); err == nil {
		t.Fatal("length mismatch accepted")
	}
}

func TestScalarTensorValue(t *testing.T) {
	orttest.Require(t)
	b := tensor.Bytes([]int64{7})
	v, err := ortshim.NewTensorValue(b, tensor.Int64, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Release()
	c, err := v.Copy()
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
	defer e.Release()
	if c, err := e.Copy(); err != nil || len(c.Data) != 0 || c.Shape[1] != 3 {
		t.Fatalf("empty copy = %+v, %v", c, err)
	}
}

// TestAddInitializer: a weight handed to the session options replaces the
// model's, and a session created without it computes the model's.
func TestAddInitializer(t *testing.T) {
	orttest.Require(t)
	plain, err := ortshim.NewSession(mlpModel, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Release()
	base := runMLP(t, plain, nil)

	w1 := make([]byte, 8*16*4) // zeros: Y becomes the bias
	wv, err := ortshim.NewTensorValue(w1, tensor.Float32, []int64{8, 16})
	if err != nil {
		t.Fatal(err)
	}
	defer wv.Release()
	so, err := ortshim.NewSessionOptions()
	if err != nil {
		t.Fatal(err)
	}
	defer so.Release()
	if err := so.AddInitializer("W1", wv); err != nil {
		t.Fatal(err)
	}
	if err := so.AddInitializer("W2", nil); err == nil {
		t.Fatal("nil value accepted")
	}
	s, err := ortshim.NewSession(mlpModel, so)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	got := tensor.Float32s(runMLP(t, s, nil))
	if bytes.Equal(runMLP(t, s, nil), base) {
		t.Fatal("AddInitializer had no effect")
	}
	for i := 4; i < len(got); i++ { // both rows are the bias
		if got[i] != got[i-4] {
			t.Fatalf("rows differ with W1 = 0: %v", got)
		}
	}
}
