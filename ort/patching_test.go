package ort

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// overwriteAdapter touches every stride-th entry of each named weight with
// value v (float32 values).
func overwriteAdapter(t testing.TB, s *Session, stride int, v float32, names ...string) *adapter.Adapter {
	t.Helper()
	a := &adapter.Adapter{Name: "test", DefaultAlpha: 1, Semantics: adapter.Overwrite}
	for _, name := range names {
		w := s.byName[name].info
		n, _ := tensor.NumElements(w.Shape)
		var ix []uint32
		var vals []float32
		for i := 0; i < n; i += stride {
			ix = append(ix, uint32(i))
			vals = append(vals, v+float32(i)/100)
		}
		at, err := adapter.NewTensor(name, w.DType, w.Shape, ix, vals, tensor.Float32)
		if err != nil {
			t.Fatal(err)
		}
		at.BaseSHA256 = w.SHA256
		a.Tensors = append(a.Tensors, at)
	}
	return a
}

// manual writes a's values into a second session by hand (the reference).
func manual(t testing.TB, ref *Session, a *adapter.Adapter) {
	t.Helper()
	for _, at := range a.Tensors {
		vals, _ := at.ValuesFloat32()
		w := tensor.Float32s(liveWeight(ref, at.Name))
		for k, i := range at.Indices {
			w[i] = vals[k]
		}
	}
}

func snapshot(t testing.TB, s *Session) map[string][]byte {
	m := map[string][]byte{}
	for _, w := range s.Weights() {
		m[w.Name] = weightBytes(t, s, w.Name)
	}
	return m
}

func TestSetApplyRevert(t *testing.T) {
	requireORT(t)
	for _, b := range allBindings {
		s := mustOpen(t, testdata("mlp"), &Options{Mode: ModeLive, WeightBinding: b})
		base := snapshot(t, s)
		in := mlpInput(t, 3, 4)
		y0 := mustRun(t, s, in)["Y"].Data
		A := overwriteAdapter(t, s, 3, 2, "W1", "W2")
		B := overwriteAdapter(t, s, 5, -1, "W2")

		refA := mustOpen(t, testdata("mlp"), &Options{Mode: ModeLive, WeightBinding: b})
		manual(t, refA, A)
		wantA := mustRun(t, refA, in)["Y"].Data
		refB := mustOpen(t, testdata("mlp"), &Options{Mode: ModeLive, WeightBinding: b})
		manual(t, refB, B)
		wantB := mustRun(t, refB, in)["Y"].Data

		if err := s.Set(context.Background(), patch.Default(A)); err != nil {
			t.Fatal(err)
		}
		if got := mustRun(t, s, in)["Y"].Data; !bytes.Equal(got, wantA) {
			t.Fatalf("%v: Set(A) output differs from hand-patched weights", b)
		}
		if act := s.Active(); len(act) != 1 || act[0].Adapter != A {
			t.Fatalf("Active = %+v", act)
		}
		if err := s.Set(context.Background(), patch.Default(B)); err != nil { // switch A -> B
			t.Fatal(err)
		}
		if got := mustRun(t, s, in)["Y"].Data; !bytes.Equal(got, wantB) {
			t.Fatalf("%v: switch to B differs from hand-patched weights", b)
		}
		if err := s.Apply(context.Background(), patch.Default(A)); err != nil {
			t.Fatal(err)
		}
		if len(s.Active()) != 2 {
			t.Fatalf("Active after Apply = %d configs", len(s.Active()))
		}
		if err := s.Revert(context.Background()); err != nil {
			t.Fatal(err)
		}
		for name, want := range base {
			if !bytes.Equal(weightBytes(t, s, name), want) {
				t.Fatalf("%v: Revert left %s different from the base", b, name)
			}
		}
		if got := mustRun(t, s, in)["Y"].Data; !bytes.Equal(got, y0) {
			t.Fatalf("%v: output after Revert differs from the base output", b)
		}
		if len(s.Active()) != 0 {
			t.Fatal("Active after Revert is not empty")
		}
	}
}

// TestSetFloat16Weight: an adapter on the fp16 weight is read by the next
// Run at the default optimization level.
func TestSetFloat16Weight(t *testing.T) {
	requireORT(t)
	s := mustOpen(t, testdata("half"), &Options{Mode: ModeLive})
	x := make([]uint16, 8)
	for i := range x {
		x[i] = tensor.Float32ToFloat16(1)
	}
	X, _ := tensor.New(tensor.Float16, []int64{1, 8}, tensor.Bytes(x))
	XB, _ := tensor.New(tensor.BFloat16, []int64{1, 8}, make([]byte, 16))
	in := map[string]*tensor.Tensor{"X": X, "XB": XB}
	y0 := mustRun(t, s, in)["Y"]
	w := s.byName["Wh"].info
	at, err := adapter.NewTensor("Wh", w.DType, w.Shape, []uint32{0, 4, 8, 12, 16, 20, 24, 28}, []float32{1, 1, 1, 1, 1, 1, 1, 1}, tensor.Float16)
	if err != nil {
		t.Fatal(err)
	}
	a := &adapter.Adapter{DefaultAlpha: 1, Semantics: adapter.Overwrite, Tensors: []adapter.Tensor{at}}
	if err := s.Set(context.Background(), patch.Default(a)); err != nil {
		t.Fatal(err)
	}
	y1 := mustRun(t, s, in)["Y"]
	got, _ := y1.AsFloat32()
	if got[0] != 8 { // column 0 of Wh is all ones now, X is all ones
		t.Fatalf("Y[0] = %v after the adapter, want 8 (before: %v)", got[0], y0)
	}
	if err := s.Revert(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mustRun(t, s, in)["Y"].Data, y0.Data) {
		t.Fatal("Revert did not restore the fp16 output")
	}
}

func TestSetRefusedChangesNothing(t *testing.T) {
	requireORT(t)
	s := mustOpen(t, testdata("mlp"), &Options{Mode: ModeLive})
	A := overwriteAdapter(t, s, 3, 2, "W1")
	if err := s.Set(context.Background(), patch.Default(A)); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, s)
	bad := overwriteAdapter(t, s, 2, 7, "W1", "W2")
	bad.Tensors[1].BaseSHA256[0] ^= 1 // made for other base weights
	if err := s.Set(context.Background(), patch.Default(bad)); err == nil {
		t.Fatal("adapter for other base weights accepted")
	}
	for name, want := range before {
		if !bytes.Equal(weightBytes(t, s, name), want) {
			t.Fatalf("refused adapter changed %s", name)
		}
	}
	if act := s.Active(); len(act) != 1 || act[0].Adapter != A {
		t.Fatal("refused adapter changed the active configuration")
	}
}

func TestAdapterMethodsWithoutWeights(t *testing.T) {
	requireORT(t)
	s := mustOpenModel(t, testdata("mlp_plain.onnx"), nil)
	if err := s.Set(context.Background()); !errors.Is(err, ErrNoWeights) {
		t.Fatalf("Set on OpenModel session: %v", err)
	}
	if s.Active() != nil || len(s.Weights()) != 0 {
		t.Fatal("OpenModel session reports weights")
	}
	s2, err := Open(context.Background(), testdata("mlp"), nil)
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
	if err := s2.Revert(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Revert after Close: %v", err)
	}
}

// TestConcurrentRunsAndSet: Runs from several goroutines while another
// switches A <-> B with Set; every output is exactly the A or the B output.
func TestConcurrentRunsAndSet(t *testing.T) {
	requireORT(t)
	s := mustOpen(t, testdata("mlp"), &Options{Mode: ModeLive})
	in := mlpInput(t, 2, 6)
	A := patch.Default(overwriteAdapter(t, s, 2, 3, "W1", "W2"))
	B := patch.Default(overwriteAdapter(t, s, 3, -2, "W1", "W2"))
	want := map[string][]byte{}
	for name, c := range map[string]patch.Config{"A": A, "B": B} {
		if err := s.Set(context.Background(), c); err != nil {
			t.Fatal(err)
		}
		want[name] = mustRun(t, s, in)["Y"].Data
	}
	done := make(chan struct{})
	switched := make(chan int)
	go func() {
		n := 0
		defer func() { switched <- n }()
		for {
			select {
			case <-done:
				return
			default:
			}
			c := A
			if n%2 == 1 {
				c = B
			}
			if err := s.Set(context.Background(), c); err != nil {
				t.Error(err)
				return
			}
			n++
		}
	}()
	errs := make(chan error, 4)
	for g := 0; g < 4; g++ {
		go func() {
			for range 150 {
				out, err := s.Run(context.Background(), in)
				if err != nil {
					errs <- err
					return
				}
				if y := out["Y"].Data; !bytes.Equal(y, want["A"]) && !bytes.Equal(y, want["B"]) {
					errs <- errors.New("a Run saw a mixed configuration")
					return
				}
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	t.Logf("%d switches during the Runs", <-switched)
}
