package lora_test

import (
	"context"
	"fmt"
	"log"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/lora"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/peft"
)

// Fuse a PEFT LoRA into the exposed weights; ORT computes scale·B·A.
func ExampleFuse() {
	ctx := context.Background()
	m, err := export.Open("exported-model")
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	weights, err := m.ReadWeights(ctx)
	if err != nil {
		log.Fatal(err)
	}
	ck, err := peft.Open("peft-lora-adapter")
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
	fmt.Println("fused", st.Tensors, "tensors in", st.Product+st.Add)
	if err := m.WriteStandalone(ctx, weights, "fused.onnx"); err != nil {
		log.Fatal(err)
	}
}
