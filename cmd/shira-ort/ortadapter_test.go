package main

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/internal/ortadapter"
)

// TestExportOrtAdapterWritesFusedWeights: export-ort-adapter writes, for each
// exposed weight the adapters touch (every exposed weight with --all), the
// weight `apply` fuses, in manifest order and named like the model's
// overridable initializer. It needs no ONNX Runtime. That ONNX Runtime
// accepts such a file, and that a Run with it active equals the live SHiRA
// patch bit for bit, is test/ortadapter_test.go's check (on every shipped
// model); this test ties the command to that check.
func TestExportOrtAdapterWritesFusedWeights(t *testing.T) {
	tmp, _, dir := exportTiny(t)
	p := func(n string) string { return filepath.Join(tmp, n) }
	mustCLI(t, "create", "--model", dir, "--targets", "^fc2", "--density", "0.05", "--scale", "0.2", "--seed", "3", "-o", p("a.shira"))
	mustCLI(t, "apply", "--model", dir, "--adapter", p("a.shira")+":0.7", "-o", p("fused.onnx"))
	fused := initializerData(t, p("fused.onnx"))

	for _, all := range []bool{false, true} {
		args := []string{"export-ort-adapter", "--model", dir, "--adapter", p("a.shira") + ":0.7", "-o", p("a.onnx_adapter")}
		if all {
			args = append(args, "--all")
		}
		mustCLI(t, args...)
		var want ortadapter.Adapter
		for _, e := range exportedManifest(t, dir).Tensors {
			if all || e.Name == "fc2.weight" {
				want.Parameters = append(want.Parameters, ortadapter.Parameter{Name: e.Name, DType: e.DType, Dims: e.Shape, Data: fused[e.Name]})
			}
		}
		wantBytes, err := ortadapter.Encode(&want)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(readFile(t, p("a.onnx_adapter")), wantBytes) {
			t.Errorf("--all=%v: the .onnx_adapter file does not hold the apply-fused weights %v", all, names(want.Parameters))
		}
	}
}

// initializerData returns the raw bytes of every initializer of an ONNX file
// with its data inline.
func initializerData(t *testing.T, path string) map[string][]byte {
	t.Helper()
	m, err := onnxwire.ReadModel(path)
	if err != nil {
		t.Fatal(err)
	}
	g, err := m.Graph()
	if err != nil {
		t.Fatal(err)
	}
	inits, err := g.Initializers()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, in := range inits {
		if out[in.Name()], err = in.Data(""); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// names lists the parameters' names.
func names(ps []ortadapter.Parameter) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Name
	}
	return out
}
