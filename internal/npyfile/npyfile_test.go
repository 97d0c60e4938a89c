package npyfile

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/shira-ort/shira-ort/internal/testutil"
	"github.com/shira-ort/shira-ort/tensor"
)

func TestRoundTrip(t *testing.T) {
	f32, _ := tensor.FromFloat32([]int64{2, 3}, []float32{1, 2, 3, 4, 5, -6})
	i64, _ := tensor.FromInt64([]int64{4}, []int64{1, -2, 3, 1 << 40})
	f16, _ := tensor.New(tensor.Float16, []int64{1, 2}, []byte{0x00, 0x3c, 0x00, 0xc0})
	scalar, _ := tensor.FromFloat32(nil, []float32{7})
	for _, want := range []*tensor.Tensor{f32, i64, f16, scalar} {
		var buf bytes.Buffer
		if err := Write(&buf, want); err != nil {
			t.Fatal(err)
		}
		if buf.Len()%64 != len(want.Data)%64 {
			t.Errorf("%v: header not padded to 64 bytes", want.DType)
		}
		got, err := Read(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		if err != nil {
			t.Fatalf("%v: %v", want.DType, err)
		}
		if got.DType != want.DType || len(got.Shape) != len(want.Shape) || !bytes.Equal(got.Data, want.Data) {
			t.Errorf("round trip: got %v %v, want %v %v", got.DType, got.Shape, want.DType, want.Shape)
		}
	}
}

func TestTruncatedIsAnError(t *testing.T) {
	f32, _ := tensor.FromFloat32([]int64{64}, make([]float32, 64))
	var buf bytes.Buffer
	if err := Write(&buf, f32); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()[:buf.Len()-1]
	if _, err := Read(bytes.NewReader(b), int64(len(b))); err == nil {
		t.Fatal("truncated file accepted")
	}
	if _, err := Read(bytes.NewReader([]byte("not a numpy file at all")), -1); err == nil {
		t.Fatal("garbage accepted")
	}
}

// TestNumPyReadsOurFiles checks the hand-written header against NumPy itself
// (Debian's python3-numpy). Without it the test fails under CI=true and is
// skipped elsewhere (testutil.Python).
func TestNumPyReadsOurFiles(t *testing.T) {
	py, ok := testutil.Python(t, "numpy")
	if !ok {
		t.Skip("python3 with numpy not available (apt-get install python3-numpy)")
	}
	p := filepath.Join(t.TempDir(), "a.npy")
	x, _ := tensor.FromFloat32([]int64{2, 2}, []float32{1, 2, 3, 4})
	if err := WriteFile(p, x); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(py, "-c", "import numpy,sys; a=numpy.load(sys.argv[1]); print(a.dtype, a.shape, a.sum())", p).CombinedOutput()
	if err != nil || string(bytes.TrimSpace(out)) != "float32 (2, 2) 10.0" {
		t.Fatalf("numpy read %q (%v)", out, err)
	}
	q := filepath.Join(t.TempDir(), "b.npy")
	if err := exec.Command(py, "-c", "import numpy,sys; numpy.save(sys.argv[1], numpy.arange(6, dtype=numpy.int64).reshape(3,2))", q).Run(); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFile(q)
	if err != nil {
		t.Fatal(err)
	}
	if got.DType != tensor.Int64 || tensor.Int64s(got.Data)[5] != 5 {
		t.Fatalf("read numpy file: %v %v", got.DType, got.Shape)
	}
	_ = os.Remove(q)
}
