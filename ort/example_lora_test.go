package ort_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/shira-ort/shira-ort/internal/ortadapter"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/tensor"
)

// Run with an ONNX Runtime adapter file (.onnx_adapter, as written by
// `shira-ort export-ort-adapter`) active: ORT feeds its dense W1 in place
// of the session's exposed W1 for that Run only.
func ExampleLoadLoraAdapter() {
	if err := ort.Init(); err != nil {
		log.Fatal(err)
	}
	s, err := ort.Open(context.Background(), "testdata/mlp", &ort.Options{IntraOpThreads: 1, Mode: ort.ModeLive})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	// An adapter holding W1 with every entry doubled.
	w1b, err := s.Weight("W1")
	if err != nil {
		log.Fatal(err)
	}
	w1 := tensor.Float32s(w1b)
	doubled := make([]float32, len(w1))
	for i, v := range w1 {
		doubled[i] = 2 * v
	}
	dir, err := os.MkdirTemp("", "lora-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "double.onnx_adapter")
	p := ortadapter.Parameter{Name: "W1", DType: tensor.Float32, Dims: []int64{8, 16}, Data: tensor.Bytes(doubled)}
	if err := ortadapter.Write(path, &ortadapter.Adapter{Parameters: []ortadapter.Parameter{p}}); err != nil {
		log.Fatal(err)
	}

	la, err := ort.LoadLoraAdapter(path)
	if err != nil {
		log.Fatal(err)
	}
	defer la.Close()
	x, err := tensor.FromFloat32([]int64{1, 8}, []float32{1, 0, 0, 0, 0, 0, 0, 0})
	if err != nil {
		log.Fatal(err)
	}
	feeds := map[string]*tensor.Tensor{"X": x}
	base, err := s.Run(context.Background(), feeds)
	if err != nil {
		log.Fatal(err)
	}
	adapted, err := s.RunLoRA(context.Background(), feeds, la)
	if err != nil {
		log.Fatal(err)
	}
	again, err := s.Run(context.Background(), feeds)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("adapter changed Y:", !bytes.Equal(base["Y"].Data, adapted["Y"].Data))
	fmt.Println("next Run is the base again:", bytes.Equal(base["Y"].Data, again["Y"].Data))
	// Output:
	// adapter changed Y: true
	// next Run is the base again: true
}
