package peft_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/peft"
)

// Convert a PEFT SHiRA checkpoint (adapter_model.safetensors +
// adapter_config.json) for a model exported with export.Expose; here the
// fixtures in models/peft (a small torch-exported transformer).
func ExampleConvertShira() {
	tmp, err := os.MkdirTemp("", "peft-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	exported := filepath.Join(tmp, "exported")
	if _, err := export.Expose(context.Background(), "../models/peft/base.onnx", exported, export.Options{}); err != nil {
		log.Fatal(err)
	}
	m, err := export.Open(exported)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	ck, err := peft.Open("../models/peft/shira_a")
	if err != nil {
		log.Fatal(err)
	}
	a, modules, err := peft.ConvertShira(ck, m, peft.ConvertOptions{Name: "style-a"})
	if err != nil {
		log.Fatal(err) // unmatched module, index out of range, NaN, ... name the module
	}
	fmt.Println(modules[0].Module, "->", modules[0].Tensor, modules[0].Layout)
	fmt.Println(len(modules), "modules,", a.NNZ(), "values,", a.Semantics, "semantics")
	if err := adapter.Write(filepath.Join(tmp, "style-a.shira"), a); err != nil {
		log.Fatal(err)
	}
	// Output:
	// lm_head -> lm_head.weight [out,in]
	// 13 modules, 474 values, delta semantics
}
