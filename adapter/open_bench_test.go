package adapter

import (
	"path/filepath"
	"testing"

	"github.com/shira-ort/shira-ort/tensor"
)

// BenchmarkOpen opens (and closes) a 60 MB adapter: 10 M fp16 values over
// one weight of 1 G elements, about what a 1 % adapter of a 1 B-parameter
// model holds.
//
//	go test -run '^$' -bench Open ./adapter/
func BenchmarkOpen(b *testing.B) {
	const n = 10_000_000
	ix := make([]uint32, n)
	for i := range ix {
		ix[i] = uint32(i) * 100
	}
	vals := make([]float32, n)
	for i := range vals {
		vals[i] = float32(i%1000) / 1000
	}
	t, err := NewTensor("w", tensor.Float16, []int64{1 << 15, 1 << 15}, ix, vals, tensor.Float16)
	if err != nil {
		b.Fatal(err)
	}
	p := filepath.Join(b.TempDir(), "big.shira")
	if err := Write(p, &Adapter{Name: "big", DefaultAlpha: 1, Semantics: Delta, Tensors: []Tensor{t}}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(n * 6)
	for b.Loop() {
		a, err := Open(p)
		if err != nil {
			b.Fatal(err)
		}
		a.Close()
	}
}
