package export

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// TestModelHandle opens an export and checks what the handle knows: the
// graph's inputs and outputs (weights excluded), the weights, offline
// fusion, the constant graph, and that Close ends reading.
func TestModelHandle(t *testing.T) {
	src := writeModel(t, mixedModel(), t.TempDir())
	out := t.TempDir()
	man, err := Expose(context.Background(), src, out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	if m.Fingerprint() != man.Fingerprint || m.Dir() != out || len(m.Manifest().Tensors) != 3 {
		t.Fatalf("handle: fingerprint %s dir %s, %d tensors", m.Fingerprint(), m.Dir(), len(m.Manifest().Tensors))
	}
	ins, outs := m.Inputs(), m.Outputs()
	if len(ins) != 2 || ins[0].Name != "x" || ins[1].Name != "img" || !slices.Equal(ins[0].Shape, []int64{-1, 4}) || ins[0].SymbolicDims[0] != "batch" {
		t.Errorf("inputs %+v (exposed weights must not be listed)", ins)
	}
	if len(outs) != 2 || outs[0].Name != "z" || outs[1].DType != tensor.Float32 {
		t.Errorf("outputs %+v", outs)
	}
	ins[0].Shape[0] = 7 // the handle's copy is not shared
	if m.Inputs()[0].Shape[0] != -1 {
		t.Error("Inputs returned the handle's own slice")
	}

	w, err := m.ReadWeights(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if one, err := m.ReadWeight("W"); err != nil || !bytes.Equal(one, w["W"]) || !bytes.Equal(one, seq(12, 1)) {
		t.Fatalf("ReadWeight(W) = %v, %v", one, err)
	}
	if _, err := m.ReadWeight("bias"); err == nil {
		t.Error("ReadWeight of a weight that is not exposed succeeded")
	}

	// Fuse = ReadWeights + FuseInto, with the model fingerprint checked
	at, err := adapter.NewTensor("W", tensor.Float32, []int64{4, 3}, []uint32{0, 5}, []float32{10, 20}, tensor.Float32)
	if err != nil {
		t.Fatal(err)
	}
	a := &adapter.Adapter{Name: "a", DefaultAlpha: 1, Semantics: adapter.Delta, Tensors: []adapter.Tensor{at}}
	fused, err := m.Fuse(context.Background(), []patch.Config{patch.Default(a)})
	if err != nil {
		t.Fatal(err)
	}
	if f := tensor.Float32s(fused["W"]); f[0] != 11 || f[5] != 26 || f[1] != 2 || !bytes.Equal(fused["K"], w["K"]) {
		t.Errorf("fused W = %v", f)
	}
	a.ModelFingerprint = strings.Repeat("0", 64)
	if _, err := m.Fuse(context.Background(), []patch.Config{patch.Default(a)}); !errors.Is(err, patch.ErrFingerprint) {
		t.Errorf("Fuse of an adapter for another model = %v, want ErrFingerprint", err)
	}
	if _, err := m.Fuse(context.Background(), []patch.Config{patch.Default(a)}, patch.WithoutFingerprintCheck()); err != nil {
		t.Errorf("Fuse with WithoutFingerprintCheck: %v", err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Fuse(cancelled, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Fuse with a cancelled context = %v", err)
	}

	// ConstantGraph: no exposed weight is a graph input any more, and every
	// exposed weight is listed with its place in the weight file
	graph, inits, err := m.ConstantGraph()
	if err != nil {
		t.Fatal(err)
	}
	pm, err := onnxwire.ParseModel(graph, out)
	if err != nil {
		t.Fatal(err)
	}
	g, err := pm.Graph()
	if err != nil {
		t.Fatal(err)
	}
	gin, _ := g.Inputs()
	for _, v := range gin {
		if man.Entry(v.Name()) != nil {
			t.Errorf("exposed weight %s is still a graph input of the constant graph", v.Name())
		}
	}
	exposed := 0
	for _, ft := range inits {
		if ft.Exposed {
			exposed++
			if e := man.Entry(ft.Name); e == nil || e.Offset != ft.Offset || e.Length != ft.Length {
				t.Errorf("file tensor %+v does not match the manifest", ft)
			}
		}
	}
	if exposed != 3 {
		t.Errorf("%d exposed file tensors, want 3", exposed)
	}

	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if _, err := m.ReadWeights(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("ReadWeights after Close = %v, want ErrClosed", err)
	}
	if len(m.Inputs()) != 2 {
		t.Error("the handle's descriptions should outlive Close")
	}
}

// TestModelIsASnapshot: a weight file replaced by a rename after Open does
// not change what the handle reads; a file given instead of a directory is
// a clear error.
func TestModelIsASnapshot(t *testing.T) {
	src := writeModel(t, mixedModel(), t.TempDir())
	out := t.TempDir()
	if _, err := Expose(context.Background(), src, out, Options{}); err != nil {
		t.Fatal(err)
	}
	m := openT(t, out)
	before, err := m.ReadWeights(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	wf := filepath.Join(out, WeightsFile)
	b, err := os.ReadFile(wf)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] ^= 0xff
	}
	tmp := wf + ".new"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, wf); err != nil {
		t.Fatal(err)
	}
	after, err := m.ReadWeights(context.Background())
	if err != nil {
		t.Fatalf("reading after the weight file was replaced: %v", err)
	}
	for name := range before {
		if !bytes.Equal(before[name], after[name]) {
			t.Errorf("weight %s changed with the file replaced on disk", name)
		}
	}
	if _, err := Open(src); !errors.Is(err, ErrManifest) || !strings.Contains(err.Error(), "not an exported model directory") {
		t.Errorf("Open(model file) = %v", err)
	}
}
