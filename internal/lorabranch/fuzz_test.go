package lorabranch

import (
	"errors"
	"testing"

	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/models"
	"github.com/shira-ort/shira-ort/tensor"
)

// FuzzAddBranches feeds arbitrary model bytes, a weight name and a rank to
// Candidates, AddBranches and Branches: they return a result or an error,
// never panic; every candidate takes a rank-1 branch, and a branch model
// reads back with that branch.
func FuzzAddBranches(f *testing.F) {
	f.Add(models.Tiny, "fc1.weight", 2)
	f.Add(models.Tiny, "head.weight", 1)
	b := onnxwire.NewBuilder()
	b.AddInput("x", tensor.Float32, []int64{-1, 4}, "batch")
	b.AddInitializer(onnxwire.NewTensor("W", tensor.Float32, []int64{4, 3}, make([]byte, 48)))
	b.AddNode("", "MatMul", []string{"x", "W"}, []string{"y"})
	b.AddOutput("y", tensor.Float32, []int64{-1, 3}, "batch")
	f.Add(b.Bytes(), "W", 3)
	if out, err := AddBranches(b.Bytes(), []Target{{"W", 1}}); err == nil {
		f.Add(out, "W.lora_A", 1)
	}
	// an external weight's declared shape is trusted up to the protobuf
	// limit: keep the fuzzer's allocations small
	old := maxProto
	maxProto = 1 << 24
	f.Cleanup(func() { maxProto = old })
	f.Fuzz(func(t *testing.T, model []byte, weight string, rank int) {
		if out, err := AddBranches(model, []Target{{weight, rank}}); err == nil {
			bs, err := Branches(out)
			if err != nil {
				t.Fatalf("Branches of a branch model: %v", err)
			}
			found := false
			for _, b := range bs {
				found = found || b.Weight == weight && b.Rank == rank
			}
			if !found {
				t.Fatalf("branch of %q rank %d not read back: %+v", weight, rank, bs)
			}
		}
		cs, err := Candidates(model)
		if err != nil {
			return
		}
		for _, c := range cs {
			if _, err := AddBranches(model, []Target{{c.Weight, 1}}); err != nil && !errors.Is(err, ErrTarget) {
				t.Fatalf("candidate %q refused: %v", c.Weight, err)
			} else if err != nil {
				t.Logf("candidate %q: %v", c.Weight, err) // a name clash
			}
		}
		_, _ = Branches(model)
	})
}
