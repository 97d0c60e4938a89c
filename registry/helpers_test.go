package registry_test

import (
	"bytes"
	"crypto/sha256"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/models"
	"github.com/shira-ort/shira-ort/registry"
	"github.com/shira-ort/shira-ort/tensor"
)

// quiet is a logger that drops everything (the tests provoke warnings).
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// tinyModel exports the shipped tiny model (fc1.weight [16 32], fc2.weight
// [32 32], head.weight [8 32], float32) into a temporary directory and
// opens it (closed when the test ends).
func tinyModel(tb testing.TB) *export.Model {
	tb.Helper()
	dir := tb.TempDir()
	src := filepath.Join(dir, "tiny.onnx")
	if err := os.WriteFile(src, models.Tiny, 0o644); err != nil {
		tb.Fatal(err)
	}
	out := filepath.Join(dir, "exported")
	if _, err := export.Expose(tb.Context(), src, out, export.Options{}); err != nil {
		tb.Fatal(err)
	}
	m, err := export.Open(out)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

// tinyAdapter returns an adapter for the tiny model touching the first nnz
// entries of fc1.weight with value v (nnz <= 512).
func tinyAdapter(tb testing.TB, m *export.Model, nnz int, v float32) *adapter.Adapter {
	tb.Helper()
	ix := make([]uint32, nnz)
	vals := make([]float32, nnz)
	for i := range ix {
		ix[i] = uint32(i)
		vals[i] = v
	}
	t, err := adapter.NewTensor("fc1.weight", tensor.Float32, []int64{16, 32}, ix, vals, tensor.Float32)
	if err != nil {
		tb.Fatal(err)
	}
	return &adapter.Adapter{Name: "t", DefaultAlpha: 1, Semantics: adapter.Delta,
		ModelFingerprint: m.Fingerprint(), Tensors: []adapter.Tensor{t}}
}

// encode returns the .shira bytes of a.
func encode(tb testing.TB, a *adapter.Adapter) []byte {
	tb.Helper()
	b, err := adapter.Encode(a)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// writeFile writes b to dir/name and returns the path.
func writeFile(tb testing.TB, dir, name string, b []byte) string {
	tb.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		tb.Fatal(err)
	}
	return p
}

// newLibrary returns a library over m (closed when the test ends), with
// a temporary cache directory unless o sets one.
func newLibrary(tb testing.TB, o registry.Options) *registry.Library {
	tb.Helper()
	if o.CacheDir == "" {
		o.CacheDir = filepath.Join(tb.TempDir(), "cache")
	}
	if o.Logger == nil {
		o.Logger = quiet
	}
	l, err := registry.New(o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := l.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return l
}

// acquire is Acquire that must succeed.
func acquire(tb testing.TB, l *registry.Library, name string) *adapter.Adapter {
	tb.Helper()
	a, err := l.Acquire(tb.Context(), name)
	if err != nil {
		tb.Fatalf("Acquire(%q): %v", name, err)
	}
	return a
}

// touch acquires and releases name.
func touch(tb testing.TB, l *registry.Library, name string) *adapter.Adapter {
	tb.Helper()
	a := acquire(tb, l, name)
	l.Release(a)
	return a
}

// register is Register that must succeed.
func register(tb testing.TB, l *registry.Library, name, path string) {
	tb.Helper()
	if err := l.Register(tb.Context(), name, path); err != nil {
		tb.Fatalf("Register(%q, %s): %v", name, path, err)
	}
}

// openNames returns the names Names reports open.
func openNames(l *registry.Library) []string {
	var out []string
	for _, in := range l.Names() {
		if in.Open {
			out = append(out, in.Name)
		}
	}
	return out
}

// checkStats compares the counters and gauges of l with want.
func checkStats(tb testing.TB, l *registry.Library, want registry.Stats) {
	tb.Helper()
	if got := l.Stats(); got != want {
		tb.Fatalf("Stats:\n got %+v\nwant %+v", got, want)
	}
}

// replaceFloat32 replaces every occurrence of the bits of old in b by
// those of v (to corrupt a value of an encoded adapter).
func replaceFloat32(b []byte, old, v float32) []byte {
	return bytes.ReplaceAll(b, tensor.Bytes([]float32{old}), tensor.Bytes([]float32{v}))
}

// fullAdapter returns an adapter for the tiny model touching every entry
// of every weight.
func fullAdapter(tb testing.TB, m *export.Model) *adapter.Adapter {
	tb.Helper()
	a := &adapter.Adapter{Name: "full", DefaultAlpha: 1, Semantics: adapter.Delta, ModelFingerprint: m.Fingerprint()}
	for _, e := range m.Manifest().Tensors {
		n, _ := tensor.NumElements(e.Shape)
		ix := make([]uint32, n)
		vals := make([]float32, n)
		for i := range ix {
			ix[i], vals[i] = uint32(i), 0.001
		}
		t, err := adapter.NewTensor(e.Name, e.DType, e.Shape, ix, vals, tensor.Float32)
		if err != nil {
			tb.Fatal(err)
		}
		a.Tensors = append(a.Tensors, t)
	}
	return a
}

// sha256Of returns the sha256 of b.
func sha256Of(b []byte) [32]byte { return sha256.Sum256(b) }

// fileSize returns the size of the file at path.
func fileSize(tb testing.TB, path string) int64 {
	tb.Helper()
	st, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	return st.Size()
}
