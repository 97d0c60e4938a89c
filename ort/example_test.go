package ort_test

import (
	"bytes"
	"context"
	"fmt"
	"log"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// Open an exported model directory and run it. The session's exposed
// weights (here W1 and W2) are read by ORT in place; adapters are switched
// into them with Set between Runs.
func ExampleOpen() {
	if err := ort.Init(); err != nil {
		log.Fatal(err) // the message says to run `shira-ort setup`
	}
	s, err := ort.Open(context.Background(), "testdata/mlp", &ort.Options{IntraOpThreads: 1})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	for _, in := range s.Inputs() {
		fmt.Println("input", in.Name, in.DType, in.Shape, "batch dimension:", in.SymbolicDims[0])
	}
	x, err := tensor.FromFloat32([]int64{1, 8}, []float32{1, 0, 0, 0, 0, 0, 0, 0})
	if err != nil {
		log.Fatal(err)
	}
	out, err := s.Run(context.Background(), map[string]*tensor.Tensor{"X": x})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("Y", out["Y"].DType, out["Y"].Shape)
	// Output:
	// input X float32 [-1 8] batch dimension: batch
	// Y float32 [1 4]
}

// Choose how a switch reaches ORT. ModePacked (the default) writes the
// adapter into ORT's prepacked weights; where it does not apply the
// session opens as ModeHybrid, shown here: it applies the adapter in
// place at once and rebuilds a prepacked session in the background;
// WaitBaked waits for it. ModeBaked switches only once the rebuilt session
// is ready; ModeLive never rebuilds.
func ExampleMode() {
	if err := ort.Init(); err != nil {
		log.Fatal(err)
	}
	s, err := ort.Open(context.Background(), "testdata/mlp", &ort.Options{IntraOpThreads: 1, Mode: ort.ModeHybrid})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	fmt.Println("mode", s.Mode(), "baked", s.Baked())

	if err := s.Revert(context.Background()); err != nil { // a switch (to the base weights): live at once
		log.Fatal(err)
	}
	fmt.Println("right after the switch, baked", s.Baked())
	if err := s.WaitBaked(context.Background()); err != nil {
		log.Fatal(err)
	}
	fmt.Println("after the rebuild, baked", s.Baked())
	// Output:
	// mode hybrid baked true
	// right after the switch, baked false
	// after the rebuild, baked true
}

// Switch an adapter into a live session and back: the README's flow. The
// adapter here is built in memory; adapter.Open reads one from a file.
func ExampleSession_Set() {
	if err := ort.Init(); err != nil {
		log.Fatal(err)
	}
	s, err := ort.Open(context.Background(), "testdata/mlp", &ort.Options{Mode: ort.ModeLive, IntraOpThreads: 1})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	x, _ := tensor.FromFloat32([]int64{1, 8}, []float32{1, 1, 1, 1, 1, 1, 1, 1})
	run := func() []byte {
		out, err := s.Run(context.Background(), map[string]*tensor.Tensor{"X": x})
		if err != nil {
			log.Fatal(err)
		}
		return out["Y"].Data
	}
	base := run()

	// Three deltas in W1 (8x16): flat indices, values added with alpha.
	t, _ := adapter.NewTensor("W1", tensor.Float32, []int64{8, 16}, []uint32{0, 17, 40}, []float32{0.5, -1, 2}, tensor.Float32)
	a := &adapter.Adapter{Name: "demo", DefaultAlpha: 1, Semantics: adapter.Delta, Tensors: []adapter.Tensor{t}}
	if err := s.Set(context.Background(), patch.Default(a)); err != nil { // the next Run sees it
		log.Fatal(err)
	}
	adapted := run()
	if err := s.Revert(context.Background()); err != nil {
		log.Fatal(err)
	}
	fmt.Println("adapted output differs:", !bytes.Equal(adapted, base))
	fmt.Println("revert is bit-exact:", bytes.Equal(run(), base))
	// Output:
	// adapted output differs: true
	// revert is bit-exact: true
}
