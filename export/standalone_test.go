package export

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/internal/testutil"
	"github.com/shira-ort/shira-ort/tensor"
)

func TestReadWeights(t *testing.T) {
	src := writeModel(t, mixedModel(), t.TempDir())
	out := t.TempDir()
	man, err := Expose(context.Background(), src, out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := openT(t, out).ReadWeights(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(w) != 3 || !bytes.Equal(w["W"], seq(12, 1)) || !bytes.Equal(w["K"], seq(18, -9)) {
		t.Errorf("weights %v", w)
	}
	// corruption is detected
	wf := filepath.Join(out, WeightsFile)
	b, _ := os.ReadFile(wf)
	b[man.Entry("K").Offset] ^= 1
	os.WriteFile(wf, b, 0o644)
	if _, err := openT(t, out).ReadWeights(context.Background()); err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Errorf("corruption: %v", err)
	}
}

func TestOpenRejectsBadManifests(t *testing.T) {
	src := writeModel(t, mixedModel(), t.TempDir())
	out := t.TempDir()
	if _, err := Expose(context.Background(), src, out, Options{}); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(out, ManifestFile)
	orig, _ := os.ReadFile(p)
	for what, edit := range map[string]func(string) string{
		"format":      func(s string) string { return strings.Replace(s, Format, "other/v9", 1) },
		"fingerprint": func(s string) string { return strings.Replace(s, `"fingerprint": "`, `"fingerprint": "00`, 1) },
		"offset":      func(s string) string { return strings.Replace(s, `"offset": 4096`, `"offset": 4097`, 1) },
		"path": func(s string) string {
			return strings.Replace(s, `"weights_file": "model.weights"`, `"weights_file": "../x"`, 1)
		},
		"json": func(s string) string { return s[:10] },
	} {
		os.WriteFile(p, []byte(edit(string(orig))), 0o644)
		if m, err := Open(out); err == nil {
			m.Close()
			t.Errorf("%s: accepted", what)
		}
	}
}

func standaloneCheck(t *testing.T, out string, man *Manifest, weights map[string][]byte, path string) *exported {
	t.Helper()
	if err := openT(t, out).WriteStandalone(context.Background(), weights, path); err != nil {
		t.Fatal(err)
	}
	x := loadExported(t, path)
	if len(man.Tensors) == 0 {
		t.Fatal("nothing exposed: the checks below would pass vacuously")
	}
	for _, e := range man.Tensors {
		if x.ins[e.Name] != nil {
			t.Errorf("%s still a graph input", e.Name)
		}
		it := x.inits[e.Name]
		if it == nil {
			t.Fatalf("%s missing", e.Name)
		}
		got, err := it.Data(filepath.Dir(path))
		if err != nil {
			t.Fatal(err)
		}
		want, ok := weights[e.Name]
		if !ok {
			want = entryBytes(t, out, &e)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: standalone bytes differ", e.Name)
		}
	}
	return x
}

func TestWriteStandalone(t *testing.T) {
	// a source with a non-exposed external tensor; one weight replaced (fused)
	srcDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(srcDir, "b.bin"), seq(3, 7), 0o644); err != nil {
		t.Fatal(err)
	}
	b := mixedModel()
	b.AddInitializer(onnxwire.TensorSpec{Name: "bias2", DType: tensor.Float32, Dims: []int64{3},
		External: &onnxwire.ExternalData{Location: "b.bin", Length: 12}}.Tensor())
	b.AddNode("add", "Add", []string{"y", "bias2"}, []string{"y2"})
	b.AddOutput("y2", tensor.Float32, []int64{-1, 3}, "batch")
	src := writeModel(t, b, srcDir)
	out := t.TempDir()
	man, err := Expose(context.Background(), src, out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	fused := map[string][]byte{"W": seq(12, 1000)}
	path := filepath.Join(t.TempDir(), "fused.onnx")
	x := standaloneCheck(t, out, man, fused, path)
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("expected only the model file, got %v", ents)
	}
	if got, err := x.inits["bias2"].Data(""); err != nil || x.inits["bias2"].IsExternal() || !bytes.Equal(got, seq(3, 7)) {
		t.Errorf("external tensor not inlined: %v", err)
	}
	for _, it := range x.inits {
		if it.IsExternal() {
			t.Errorf("%s still external", it.Name())
		}
	}
	ins, _ := x.graph.Inputs()
	if len(ins) != 2 {
		t.Errorf("graph inputs %d, want x and img", len(ins))
	}
	py := pythonCheck(t, path, "print(numpy_helper.to_array([i for i in m.graph.initializer if i.name == 'W'][0]).flatten().tolist()[:2])\nprint([i.name for i in m.graph.input])\n")
	if py != "" && !strings.Contains(py, "[1000.0, 1001.0]") {
		t.Errorf("python: %s", py)
	}

	// bad weights are refused
	if err := openT(t, out).WriteStandalone(context.Background(), map[string][]byte{"W": seq(2, 0)}, path); err == nil {
		t.Error("short weight accepted")
	}
	if err := openT(t, out).WriteStandalone(context.Background(), map[string][]byte{"nope": nil}, path); err == nil {
		t.Error("unknown weight accepted")
	}
}

func TestWriteStandaloneExternalFallback(t *testing.T) {
	src := writeModel(t, mixedModel(), t.TempDir())
	out := t.TempDir()
	man, err := Expose(context.Background(), src, out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Replace(t, &maxProto, 100) // pretend the 2 GB limit is 100 bytes
	dir := t.TempDir()
	path := filepath.Join(dir, "big.onnx")
	x := standaloneCheck(t, out, man, map[string][]byte{"K": seq(18, 50)}, path)
	for _, e := range man.Tensors {
		ext, ok, _ := x.inits[e.Name].External()
		if !ok || ext.Location != "big.onnx.data" || ext.Offset%DefaultAlignment != 0 {
			t.Errorf("%s: %+v", e.Name, ext)
		}
	}
	pythonCheck(t, path, "")
}

func TestStandaloneRoundTripOfSource(t *testing.T) {
	// Expose then WriteStandalone without changes gives back the source's
	// tensors (transposed ones in their folded layout).
	src := writeModel(t, mixedModel(), t.TempDir())
	out := t.TempDir()
	man, err := Expose(context.Background(), src, out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "s.onnx")
	x := standaloneCheck(t, out, man, nil, path)
	orig := loadExported(t, src)
	for name, ot := range orig.inits {
		a, _ := ot.Data("")
		b, err := x.inits[name].Data("")
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs after round trip", name)
		}
	}
	if len(x.nodes) != len(orig.nodes) {
		t.Fatalf("%d nodes, the source has %d", len(x.nodes), len(orig.nodes))
	}
	for i := range x.nodes {
		if !bytes.Equal(x.nodes[i].Encode(), orig.nodes[i].Encode()) {
			t.Errorf("node %d changed", i)
		}
	}
}
