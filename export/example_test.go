package export_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/tensor"
)

func ExampleExpose() {
	dir, err := os.MkdirTemp("", "shira-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// y = x · Transpose(W), W stored [out=3, in=2] like a torch Linear.
	b := onnxwire.NewBuilder()
	b.AddInput("x", tensor.Float32, []int64{1, 2})
	b.AddInitializer(onnxwire.NewTensor("W", tensor.Float32, []int64{3, 2}, make([]byte, 24)))
	b.AddNode("t", "Transpose", []string{"W"}, []string{"Wt"}, onnxwire.IntsAttr("perm", 1, 0))
	b.AddNode("proj", "MatMul", []string{"x", "Wt"}, []string{"y"})
	b.AddOutput("y", tensor.Float32, []int64{1, 3})
	src := filepath.Join(dir, "src.onnx")
	if err := b.WriteFile(src); err != nil {
		log.Fatal(err)
	}

	man, err := export.Expose(context.Background(), src, filepath.Join(dir, "out"), export.Options{})
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range man.Tensors {
		c := e.Consumers[0]
		fmt.Printf("%s %v %v at %d (+%d) <- %s perm %v; read by %s input %d\n",
			e.Name, e.DType, e.Shape, e.Offset, e.Length, e.Source.Name, e.Source.Perm, c.Node, c.InputIndex)
	}
	// Output:
	// W.T float32 [2 3] at 0 (+24) <- W perm [1 0]; read by proj input 1
}
