package overlap_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/overlap"
)

// FuzzCompare decodes an arbitrary .shira file and compares the adapter
// with itself: whatever shapes the file declares, Compare returns a result
// or an error, never a panic, in bounded time and with allocations bounded
// by what the file holds (not by its declared shapes).
func FuzzCompare(f *testing.F) {
	for _, shape := range [][]int64{{4, 8}, {1, 1 << 24}, {1, 1 << 36}, {1 << 20, 1 << 12}} {
		at, err := adapter.NewTensor("w", 1, shape, []uint32{1, 3, 7}, []float32{1, -2, 0.5}, 1)
		if err != nil {
			f.Fatal(err)
		}
		b, err := adapter.Encode(&adapter.Adapter{Name: "a", DefaultAlpha: 1, Semantics: adapter.Delta, Tensors: []adapter.Tensor{at}})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := adapter.Decode(data)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, _, err = overlap.Compare(ctx, []*adapter.Adapter{a, a}, overlap.Options{})
		runtime.ReadMemStats(&after)
		if err != nil {
			return
		}
		// a generous O(nnz²)-free bound: 64 KiB plus 1 KiB per entry
		if n := after.TotalAlloc - before.TotalAlloc; n > 64<<10+uint64(a.NNZ())<<10 {
			t.Fatalf("Compare of %d entries allocated %d bytes", a.NNZ(), n)
		}
	})
}
