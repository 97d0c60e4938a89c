package ortshim_test

import (
	"bytes"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/internal/ortshim"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/tensor"
)

// matMulModel is Y = X·W with W [k, n] a constant initializer.
func matMulModel(w []float32, k, n int) []byte {
	return onnxwire.NewBuilder().
		AddInitializer(onnxwire.TensorSpec{Name: "W", DType: tensor.Float32, Dims: []int64{int64(k), int64(n)}, Raw: tensor.Bytes(w)}.Tensor()).
		AddInput("X", tensor.Float32, []int64{-1, int64(k)}, "batch", "").
		AddOutput("Y", tensor.Float32, []int64{-1, int64(n)}, "batch", "").
		AddNode("mm", "MatMul", []string{"X", "W"}, []string{"Y"}).
		Bytes()
}

// packRef is MLAS's packed SGEMM B layout of the [k, n] weight w, written
// out plainly (16-column panels in 256-row K slices, zero padding).
func packRef(w []float32, k, n int) []byte {
	an := (n + 15) &^ 15
	out := make([]float32, an*k)
	for r := 0; r < k; r++ {
		s := r / 256
		ck := min(256, k-256*s)
		for c := 0; c < n; c++ {
			out[an*256*s+(c/16)*16*ck+(r%256)*16+c%16] = w[r*n+c]
		}
	}
	return append([]byte(nil), tensor.Bytes(out)...)
}

// TestTrackingFindsPrepackedWeight: a session created with the env
// allocators while recording allocates the prepacked MatMul weight through
// the tracking allocator, in MLAS's packed layout; writing a value at its
// packed offset changes the next Run as a model with that weight would.
func TestTrackingFindsPrepackedWeight(t *testing.T) {
	orttest.Require(t)
	if runtime.GOARCH != "amd64" {
		t.Skip("the packed layout checked here is x86-64's")
	}
	const k, n = 300, 40
	r := rand.New(rand.NewPCG(1, 2))
	w := make([]float32, k*n)
	for i := range w {
		w[i] = r.Float32() - 0.5
	}
	model := matMulModel(w, k, n)
	so, err := ortshim.NewSessionOptions()
	if err != nil {
		t.Fatal(err)
	}
	defer so.Release()
	if err := so.AddConfigEntry(ortshim.EnvAllocatorsKey, "1"); err != nil {
		t.Fatal(err)
	}
	before := ortshim.TrackedRecords()
	var s *ortshim.Session
	rec, err := ortshim.Record(func() error {
		var err error
		s, err = ortshim.NewSessionFromBytes(model, so)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := packRef(w, k, n)
	var found []ortshim.Block
	for _, b := range rec.Blocks {
		if bytes.Equal(b.Data, want) {
			found = append(found, b)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d blocks recorded, %d hold the packed weight (want 1)", len(rec.Blocks), len(found))
	}
	if err := rec.Keep([]int64{found[0].ID}); err != nil {
		t.Fatal(err)
	}
	x := make([]float32, 3*k)
	for i := range x {
		x[i] = r.Float32()
	}
	run := func() []float32 {
		xv, err := ortshim.NewTensorValue(tensor.Bytes(x), tensor.Float32, []int64{3, k})
		if err != nil {
			t.Fatal(err)
		}
		defer xv.Release()
		in, out := ortshim.NewNames([]string{"X"}), ortshim.NewNames([]string{"Y"})
		defer in.Free()
		defer out.Free()
		res, err := s.Run(nil, in, []*ortshim.Value{xv}, out)
		if err != nil {
			t.Fatal(err)
		}
		return append([]float32(nil), tensor.Float32s(res[0].Data)...)
	}
	base := run()
	// patch W[257][33] in the packed buffer (second K slice, third panel)
	const pk, pn = 257, 33
	off := (n+15)&^15*256*1 + (pn/16)*16*(k-256) + (pk%256)*16 + pn%16
	packed := tensor.Float32s(found[0].Data)
	orig := packed[off]
	if orig != w[pk*n+pn] {
		t.Fatalf("packed[%d] = %v, want W[%d][%d] = %v", off, orig, pk, pn, w[pk*n+pn])
	}
	packed[off] = orig + 100
	got := run()
	for row := 0; row < 3; row++ {
		d := float64(got[row*n+pn] - base[row*n+pn])
		if want := 100 * float64(x[row*k+pk]); math.Abs(d-want) > 1e-3*math.Max(1, math.Abs(want)) {
			t.Fatalf("row %d: output moved by %v, want %v", row, d, want)
		}
	}
	packed[off] = orig
	if back := run(); !bytes.Equal(tensor.Bytes(back), tensor.Bytes(base)) {
		t.Fatal("writing the original back did not restore the output bit for bit")
	}
	if rec.Freed() != 0 {
		t.Fatal("ORT freed the packed weight while the session is alive")
	}
	s.Release()
	if rec.Freed() != 1 {
		t.Fatalf("after ReleaseSession: %d pinned blocks freed by ORT, want 1", rec.Freed())
	}
	rec.Release()
	if after := ortshim.TrackedRecords(); after != before {
		t.Fatalf("tracked records: %d before, %d after release", before, after)
	}
}
