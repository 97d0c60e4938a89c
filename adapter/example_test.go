package adapter_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/tensor"
)

// Build an adapter in memory, write it atomically, and open it again: Open
// maps the file, verifies every offset, index bound and the sort order, and
// decodes it without copying the values.
func Example() {
	t, err := adapter.NewTensor("fc1.weight", tensor.Float32, []int64{16, 32},
		[]uint32{511, 3, 100}, []float32{0.25, -0.5, 1}, tensor.Float32) // sorted for you
	if err != nil {
		panic(err)
	}
	a := &adapter.Adapter{Name: "style-a", DefaultAlpha: 1, Semantics: adapter.Delta,
		Metadata: map[string]string{"trained_on": "fortunes"}, Tensors: []adapter.Tensor{t}}

	dir, _ := os.MkdirTemp("", "shira-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "style-a.shira")
	if err := adapter.Write(path, a); err != nil {
		panic(err)
	}
	b, err := adapter.Open(path)
	if err != nil {
		panic(err)
	}
	defer b.Close()
	v, _ := b.Tensors[0].ValuesFloat32()
	fmt.Println(b.Name, b.Semantics, b.Metadata["trained_on"])
	fmt.Println(b.Tensors[0].Name, b.Tensors[0].Indices, v)
	// Output:
	// style-a delta fortunes
	// fc1.weight [3 100 511] [-0.5 1 0.25]
}
