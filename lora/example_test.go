package lora_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/lora"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/peft"
)

// Fuse a PEFT LoRA checkpoint into the exposed weights of a model
// exported with export.Expose (here the fixtures in models/peft); ORT
// computes scale·B·A.
func ExampleFuse() {
	ctx := context.Background()
	tmp, err := os.MkdirTemp("", "lora-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	exported := filepath.Join(tmp, "exported")
	if _, err := export.Expose(ctx, "../models/peft/base.onnx", exported, export.Options{}); err != nil {
		log.Fatal(err)
	}
	m, err := export.Open(exported)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	weights, err := m.ReadWeights(ctx)
	if err != nil {
		log.Fatal(err)
	}
	ck, err := peft.Open("../models/peft/lora")
	if err != nil {
		log.Fatal(err)
	}
	mods, err := ck.Lora()
	if err != nil {
		log.Fatal(err)
	}
	res, err := lora.Resolve(mods, m)
	if err != nil {
		log.Fatal(err)
	}
	if err := ort.Init(); err != nil {
		log.Fatal(err)
	}
	e, err := lora.NewEngine(&ort.Options{IntraOpThreads: 2})
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close()
	st, err := lora.Fuse(ctx, e, weights, res)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("fused", st.Tensors, "modules,", st.Elements, "weight entries")
	if err := m.WriteStandalone(ctx, weights, filepath.Join(tmp, "fused.onnx")); err != nil {
		log.Fatal(err)
	}
	// Output:
	// fused 5 modules, 1184 weight entries
}
