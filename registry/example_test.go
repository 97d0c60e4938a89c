package registry_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/models"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/registry"
	"github.com/shira-ort/shira-ort/tensor"
)

// Register a directory of adapters for an exported model, then acquire
// one by name, use it and hand it back. Nothing is mapped until the first
// Acquire; the second Acquire finds it open.
func ExampleLibrary() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "registry-example")
	defer os.RemoveAll(dir)

	// The exported model (here the tiny one shipped with shira-ort) ...
	src := filepath.Join(dir, "tiny.onnx")
	if err := os.WriteFile(src, models.Tiny, 0o644); err != nil {
		panic(err)
	}
	if _, err := export.Expose(ctx, src, filepath.Join(dir, "model"), export.Options{}); err != nil {
		panic(err)
	}
	m, err := export.Open(filepath.Join(dir, "model"))
	if err != nil {
		panic(err)
	}
	defer m.Close()

	// ... and a directory of adapters for it.
	adapters := filepath.Join(dir, "adapters")
	if err := os.Mkdir(adapters, 0o755); err != nil {
		panic(err)
	}
	for i, name := range []string{"style-a", "style-b"} {
		t, err := adapter.NewTensor("fc1.weight", tensor.Float32, []int64{16, 32},
			[]uint32{3, 100, 511}, []float32{0.25 * float32(i+1), -0.5, 1}, tensor.Float32)
		if err != nil {
			panic(err)
		}
		a := &adapter.Adapter{Name: name, DefaultAlpha: 1, Semantics: adapter.Delta,
			ModelFingerprint: m.Fingerprint(), Tensors: []adapter.Tensor{t}}
		if err := adapter.Write(filepath.Join(adapters, name+".shira"), a); err != nil {
			panic(err)
		}
	}

	lib, err := registry.New(registry.Options{Model: m, MaxOpen: 8})
	if err != nil {
		panic(err)
	}
	defer lib.Close()
	names, err := lib.RegisterDir(ctx, adapters)
	if err != nil {
		panic(err)
	}
	fmt.Println("registered:", names, "open:", lib.Stats().Open)

	for range 2 {
		a, err := lib.Acquire(ctx, "style-b") // mapped and validated on a miss
		if err != nil {
			panic(err)
		}
		// Use it while it is acquired: here offline fusion; a session
		// would Set it (sess.Set(ctx, patch.Default(a))), and the adapter
		// would be released once the session has switched away from it.
		if _, err := m.Fuse(ctx, []patch.Config{patch.Default(a)}); err != nil {
			panic(err)
		}
		fmt.Println(a.Name, a.NNZ(), "values")
		lib.Release(a)
	}
	s := lib.Stats()
	fmt.Printf("registered %d, open %d, misses %d, hits %d\n", s.Registered, s.Open, s.Misses, s.Hits)
	// Output:
	// registered: [style-a style-b] open: 0
	// style-b 3 values
	// style-b 3 values
	// registered 2, open 1, misses 1, hits 1
}
