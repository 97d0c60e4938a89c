package peft_test

import (
	"fmt"
	"log"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/peft"
)

// Convert a PEFT SHiRA checkpoint for a model exported with export.Expose.
func ExampleConvertShira() {
	m, err := export.Open("exported-model")
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	ck, err := peft.Open("peft-shira-adapter") // adapter_model.safetensors + adapter_config.json
	if err != nil {
		log.Fatal(err)
	}
	a, modules, err := peft.ConvertShira(ck, m, peft.ConvertOptions{Name: "style-a"})
	if err != nil {
		log.Fatal(err) // unmatched module, index out of range, NaN, ... name the module
	}
	for _, r := range modules {
		fmt.Println(r.Module, "->", r.Tensor, r.Layout, r.NNZ)
	}
	if err := adapter.Write("style-a.shira", a); err != nil {
		log.Fatal(err)
	}
}
