package patch_test

import (
	"fmt"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

func Example() {
	// A 2x3 float32 weight (in a real program: a buffer ORT reads).
	w, _ := tensor.FromFloat32([]int64{2, 3}, []float32{1, 2, 3, 4, 5, 6})

	// An adapter overwriting two entries (the paper's scatter).
	t, _ := adapter.NewTensor("proj.weight", tensor.Float32, []int64{2, 3},
		[]uint32{4, 0}, []float32{50, 10}, tensor.Float32)
	a := &adapter.Adapter{Name: "demo", DefaultAlpha: 1, Semantics: adapter.Overwrite, Tensors: []adapter.Tensor{t}}
	file, _ := adapter.Encode(a) // what adapter.Write stores
	a, _ = adapter.Decode(file)

	p, err := patch.New([]patch.Weight{{Name: "proj.weight", DType: w.DType, Shape: w.Shape, Data: w.Data}})
	if err != nil {
		panic(err)
	}
	if err := p.Set(patch.Default(a)); err != nil {
		panic(err)
	}
	fmt.Println("patched: ", tensor.Float32s(w.Data))

	if err := p.Set(patch.Config{Adapter: a, Alpha: 0.5}); err != nil { // halfway
		panic(err)
	}
	fmt.Println("alpha .5:", tensor.Float32s(w.Data))

	p.Revert()
	fmt.Println("reverted:", tensor.Float32s(w.Data))
	// Output:
	// patched:  [10 2 3 4 50 6]
	// alpha .5: [5.5 2 3 4 27.5 6]
	// reverted: [1 2 3 4 5 6]
}
