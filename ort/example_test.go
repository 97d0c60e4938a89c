package ort_test

import (
	"context"
	"fmt"
	"log"

	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/tensor"
)

// Open an exported model directory and run it. The session's exposed
// weights (here W1 and W2) are read by ORT in place; adapters are switched
// into them with Set between Runs.
func ExampleOpen() {
	if err := ort.Init(); err != nil {
		log.Fatal(err) // the message says to run `bash scripts/setup-ort.sh`
	}
	s, err := ort.Open("testdata/mlp", &ort.Options{IntraOpThreads: 1})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	for _, in := range s.Inputs() {
		fmt.Println("input", in.Name, in.DType, in.Shape, in.SymbolicDims)
	}
	x, err := tensor.FromFloat32([]int64{1, 8}, []float32{1, 0, 0, 0, 0, 0, 0, 0})
	if err != nil {
		log.Fatal(err)
	}
	out, err := s.Run(map[string]*tensor.Tensor{"X": x})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("Y", out["Y"].DType, out["Y"].Shape)
}

// Choose how a switch reaches ORT. ModeHybrid (the default) applies the
// adapter in place at once and rebuilds a prepacked session in the
// background; WaitBaked waits for it. ModeBaked switches only once the
// rebuilt session is ready; ModeLive never rebuilds.
func ExampleMode() {
	if err := ort.Init(); err != nil {
		log.Fatal(err)
	}
	s, err := ort.Open("testdata/mlp", &ort.Options{IntraOpThreads: 1, Mode: ort.ModeHybrid})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	fmt.Println("mode", s.Mode(), "baked", s.Baked())

	if err := s.Revert(); err != nil { // a switch (to the base weights): live at once
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
