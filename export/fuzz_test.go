//go:build unix

package export

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/internal/atomicfile"
	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/internal/onnxwire/onnxwiretest"
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
// data file of models/testdata/external, so external tensors resolve, and
// the links and FIFO of onnxwiretest.UntrustedDir, so fuzzed locations can
// name them) and exports it. Expose must return a manifest or an error, without
// hanging; what it exports must open (Open, ReadWeights), parse again and
// turn into a standalone model, and must not hold the bytes of the file
// outside the source directory (onnxwiretest.Secret) unless the model
// itself does.
func FuzzExpose(f *testing.F) {
	for _, b := range repoModels(f) {
		f.Add(b)
	}
	atomicfile.DisableSync() // thousands of exports: atomicity is kept, fsync is not needed
	src := onnxwiretest.UntrustedDir(f)
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
		m, err := Expose(context.Background(), mp, out, Options{})
		if err != nil {
			if _, statErr := os.Stat(filepath.Join(out, ManifestFile)); statErr == nil {
				t.Fatalf("failed export left a manifest behind: %v", err)
			}
			return
		}
		om, err := Open(out)
		if err != nil {
			t.Fatalf("exported model does not open: %v", err)
		}
		defer om.Close()
		if om.Fingerprint() != m.Fingerprint {
			t.Fatalf("fingerprint %s on disk, %s returned", om.Fingerprint(), m.Fingerprint)
		}
		if _, err := om.ReadWeights(context.Background()); err != nil {
			t.Fatalf("exported weights do not read back: %v", err)
		}
		if _, err := onnxwire.ReadModel(filepath.Join(out, ModelFile)); err != nil {
			t.Fatalf("exported model does not parse: %v", err)
		}
		if err := om.WriteStandalone(context.Background(), nil, filepath.Join(out, "standalone.onnx")); err != nil {
			t.Fatalf("standalone of an exported model: %v", err)
		}
		if !bytes.Contains(data, onnxwiretest.Secret[:8]) {
			noSecretIn(t, out)
		}
	})
}

// FuzzLoadManifest opens (Open) a directory with an arbitrary manifest.json
// beside a small real model and weight file and reads the weights: a result
// or an error (ErrManifest or a read error), never a panic or an
// allocation the weight file cannot back.
func FuzzLoadManifest(f *testing.F) {
	atomicfile.DisableSync()
	good := filepath.Join(f.TempDir(), "good")
	if _, err := Expose(context.Background(), filepath.Join("..", "models", "testdata", "fp16", "model.onnx"), good, Options{}); err != nil {
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
		om, err := Open(good)
		if err != nil {
			if !errors.Is(err, ErrManifest) {
				t.Fatalf("error does not wrap ErrManifest: %v", err)
			}
			return
		}
		defer om.Close()
		w, err := om.ReadWeights(context.Background())
		if err != nil {
			return
		}
		for _, e := range om.Manifest().Tensors {
			n, _ := tensor.NumElements(e.Shape)
			if len(w[e.Name]) != n*e.DType.Size() {
				t.Fatalf("weight %q: %d bytes for %v %v", e.Name, len(w[e.Name]), e.DType, e.Shape)
			}
		}
	})
}

// TestReadWeightsRefusesHugeEntry is the regression test for a manifest
// whose (consistent, fingerprinted) entry claims far more bytes than the
// weight file holds: Open must refuse it (before anything allocates).
func TestReadWeightsRefusesHugeEntry(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "x")
	m, err := Expose(context.Background(), filepath.Join("..", "models", "testdata", "fp16", "model.onnx"), dir, Options{})
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
	js, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ManifestFile), js, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); !errors.Is(err, ErrManifest) || !strings.Contains(err.Error(), "beyond the end") {
		t.Fatalf("Open = %v, want ErrManifest: beyond the end", err)
	}
}
