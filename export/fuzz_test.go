package export

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/internal/atomicfile"
	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/tensor"
)

// repoModels returns the shipped test models (models/testdata/*/model.onnx
// and the demo model) as fuzz seeds.
func repoModels(tb testing.TB) [][]byte {
	paths, _ := filepath.Glob(filepath.Join("..", "models", "testdata", "*", "model.onnx"))
	paths = append(paths, filepath.Join("..", "models", "tiny", "model.onnx"))
	var out [][]byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// watchdog panics (failing the fuzz input) when one input takes longer
// than d: a hang is a bug like a crash.
func watchdog(d time.Duration) func() bool {
	return time.AfterFunc(d, func() { panic("fuzz input took longer than " + d.String()) }).Stop
}

// FuzzExpose writes arbitrary bytes as model.onnx (beside the external
// data file of models/testdata/external, so external tensors resolve) and
// exports it. Expose must return a manifest or an error; what it exports
// must load (LoadManifest, ReadWeights), parse again and turn into a
// standalone model.
func FuzzExpose(f *testing.F) {
	for _, b := range repoModels(f) {
		f.Add(b)
	}
	atomicfile.DisableSync() // thousands of exports: atomicity is kept, fsync is not needed
	src := f.TempDir()
	ext, err := os.ReadFile(filepath.Join("..", "models", "testdata", "external", "model.onnx.data"))
	if err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "model.onnx.data"), ext, 0o644); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		defer watchdog(10 * time.Second)()
		mp := filepath.Join(src, "model.onnx")
		if err := os.WriteFile(mp, data, 0o644); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "out")
		m, err := Expose(mp, out, Options{})
		if err != nil {
			if _, statErr := os.Stat(filepath.Join(out, ManifestFile)); statErr == nil {
				t.Fatalf("failed export left a manifest behind: %v", err)
			}
			return
		}
		m2, err := LoadManifest(out)
		if err != nil {
			t.Fatalf("exported manifest does not load: %v", err)
		}
		if m2.Fingerprint != m.Fingerprint {
			t.Fatalf("fingerprint %s on disk, %s returned", m2.Fingerprint, m.Fingerprint)
		}
		if _, err := ReadWeights(out, m2); err != nil {
			t.Fatalf("exported weights do not read back: %v", err)
		}
		if _, err := onnxwire.ReadModel(filepath.Join(out, ModelFile)); err != nil {
			t.Fatalf("exported model does not parse: %v", err)
		}
		if err := WriteStandalone(out, m2, nil, filepath.Join(out, "standalone.onnx")); err != nil {
			t.Fatalf("standalone of an exported model: %v", err)
		}
	})
}

// FuzzLoadManifest loads an arbitrary manifest.json beside a small real
// weight file and reads the weights: a result or an error (ErrManifest or
// a read error), never a panic or an allocation the weight file cannot
// back.
func FuzzLoadManifest(f *testing.F) {
	atomicfile.DisableSync()
	good := filepath.Join(f.TempDir(), "good")
	if _, err := Expose(filepath.Join("..", "models", "testdata", "fp16", "model.onnx"), good, Options{}); err != nil {
		f.Fatal(err)
	}
	js, err := os.ReadFile(filepath.Join(good, ManifestFile))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(js)
	f.Fuzz(func(t *testing.T, data []byte) {
		defer watchdog(10 * time.Second)()
		if err := os.WriteFile(filepath.Join(good, ManifestFile), data, 0o644); err != nil {
			t.Fatal(err)
		}
		m, err := LoadManifest(good)
		if err != nil {
			if !errors.Is(err, ErrManifest) {
				t.Fatalf("error does not wrap ErrManifest: %v", err)
			}
			return
		}
		m.Summary()
		w, err := ReadWeights(good, m)
		if err != nil {
			return
		}
		for _, e := range m.Tensors {
			n, _ := tensor.NumElements(e.Shape)
			if len(w[e.Name]) != n*e.DType.Size() {
				t.Fatalf("weight %q: %d bytes for %v %v", e.Name, len(w[e.Name]), e.DType, e.Shape)
			}
		}
	})
}

// TestReadWeightsRefusesHugeEntry is the regression test for a manifest
// whose (consistent, fingerprinted) entry claims far more bytes than the
// weight file holds: ReadWeights must refuse it before allocating.
func TestReadWeightsRefusesHugeEntry(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "x")
	m, err := Expose(filepath.Join("..", "models", "testdata", "fp16", "model.onnx"), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := &m.Tensors[len(m.Tensors)-1]   // the last one: nothing after it to overlap
	e.Shape = []int64{1 << 20, 1 << 20} // 2 TiB of fp16
	e.Length = int64(1<<40) * int64(e.DType.Size())
	m.Fingerprint = Fingerprint(m.Tensors)
	if err := m.Validate(); err != nil {
		t.Fatalf("the crafted manifest should be self-consistent: %v", err)
	}
	if _, err := ReadWeights(dir, m); !errors.Is(err, ErrManifest) || !strings.Contains(err.Error(), "beyond the end") {
		t.Fatalf("ReadWeights = %v, want ErrManifest: beyond the end", err)
	}
}
