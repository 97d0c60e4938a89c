package sched_test

import (
	"context"
	"fmt"
	"sync"

	"github.com/shira-ort/shira-ort/sched"
	"github.com/shira-ort/shira-ort/tensor"
)

// scaler is a toy exclusive backend: the active configuration scales its
// input by 1 + the sum of the alphas. A real one calls ort.Session.Set in
// Switch and ort.Session.Run in Run.
type scaler struct{ scale float32 }

func (b *scaler) Switch(ctx context.Context, key sched.Key) error {
	entries, err := sched.ParseKey(key)
	if err != nil {
		return err
	}
	b.scale = 1
	for _, e := range entries {
		b.scale += e.Alpha
	}
	return nil
}

func (b *scaler) Run(ctx context.Context, key sched.Key, in map[string]*tensor.Tensor) (map[string]*tensor.Tensor, error) {
	x, err := in["x"].AsFloat32()
	if err != nil {
		return nil, err
	}
	for i := range x {
		x[i] *= b.scale
	}
	y, err := tensor.FromFloat32(in["x"].Shape, x)
	return map[string]*tensor.Tensor{"y": y}, err
}

func ExampleScheduler() {
	s, err := sched.New(&scaler{}, sched.Options{
		Exclusive: true, // one active configuration: Switch between groups
		MaxBatch:  8,    // the model's inputs and outputs have a free batch dimension
	})
	if err != nil {
		panic(err)
	}
	keys := []sched.Key{
		sched.Base,
		sched.KeyOf([]sched.Entry{{Name: "pirate", Alpha: 1}}),
		sched.KeyOf([]sched.Entry{{Name: "pirate", Alpha: 0.5}, {Name: "formal", Alpha: 0.25}}),
	}
	results := make([]float32, 6)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() {
			x, _ := tensor.FromFloat32([]int64{1, 1}, []float32{10})
			out, err := s.Run(context.Background(), keys[i%3], map[string]*tensor.Tensor{"x": x})
			if err != nil {
				panic(err)
			}
			results[i] = tensor.Float32s(out["y"].Data)[0]
		})
	}
	wg.Wait()
	if err := s.Close(context.Background()); err != nil {
		panic(err)
	}
	for i, y := range results {
		fmt.Printf("%-25q %v\n", keys[i%3], y)
	}
	st := s.Stats()
	fmt.Println("completed:", st.Completed, "switches <= 6:", st.Switches <= 6)
	// Output:
	// ""                        10
	// "pirate@1"                20
	// "pirate@0.5,formal@0.25"  17.5
	// ""                        10
	// "pirate@1"                20
	// "pirate@0.5,formal@0.25"  17.5
	// completed: 6 switches <= 6: true
}
