package main

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	peftfix "github.com/shira-ort/shira-ort/internal/pefttest"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// TestExportOrtAdapterRunsInORT: the file `export-ort-adapter` writes is
// accepted by ONNX Runtime's LoRA API, and a live session running with it
// active equals, bit for bit, the live session patched with the adapter.
func TestExportOrtAdapterRunsInORT(t *testing.T) {
	peftfix.RequireORT(t)
	tmp := t.TempDir()
	p := func(n string) string { return filepath.Join(tmp, n) }
	dir := p("tiny")
	cli(t, "export", filepath.Join("..", "..", "models", "tiny", "model.onnx"), "-o", dir)
	cli(t, "create", "--model", dir, "--mask", "rand", "--density", "0.05", "--scale", "0.2", "--seed", "3", "-o", p("a.shira"))
	t.Log(cli(t, "export-ort-adapter", "--model", dir, "--adapter", p("a.shira")+":0.7", "-o", p("a.onnx_adapter")))

	la, err := ort.LoadLoraAdapter(p("a.onnx_adapter"))
	if err != nil {
		t.Fatalf("ORT rejects the exported adapter: %v", err)
	}
	defer la.Close()
	plain, err := ort.Open(context.Background(), dir, &ort.Options{Mode: ort.ModeLive})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	patched, err := ort.Open(context.Background(), dir, &ort.Options{Mode: ort.ModeLive})
	if err != nil {
		t.Fatal(err)
	}
	defer patched.Close()
	a, err := adapter.Open(p("a.shira"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := patched.Set(context.Background(), patch.Config{Adapter: a, Alpha: 0.7}); err != nil {
		t.Fatal(err)
	}

	feeds := map[string]*tensor.Tensor{}
	for _, in := range plain.Inputs() {
		shape := make([]int64, len(in.Shape))
		for i, d := range in.Shape {
			shape[i] = max(d, 2)
		}
		n, _ := tensor.NumElements(shape)
		v := make([]float32, n)
		for i := range v {
			v[i] = float32((i*7)%13)/6 - 1
		}
		x, err := tensor.FromFloat32(shape, v)
		if err != nil {
			t.Fatal(err)
		}
		feeds[in.Name] = x
	}
	base, err := plain.Run(context.Background(), feeds)
	if err != nil {
		t.Fatal(err)
	}
	got, err := plain.RunLoRA(context.Background(), feeds, la)
	if err != nil {
		t.Fatal(err)
	}
	want, err := patched.Run(context.Background(), feeds)
	if err != nil {
		t.Fatal(err)
	}
	changed := false
	for name, w := range want {
		if string(got[name].Data) != string(w.Data) {
			t.Errorf("output %s: ORT adapter run != patched session", name)
		}
		if string(base[name].Data) != string(w.Data) {
			changed = true
		}
	}
	if !changed {
		t.Error("the adapter changed no output")
	}
}
