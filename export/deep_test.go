package export

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/tensor"
)

// deepGemmModel holds levels If nodes nested in each other's then_branch;
// the innermost graph is Gemm(a, K) on the main graph's input a and
// initializer K.
func deepGemmModel(levels int) *onnxwire.Builder {
	inner := onnxwire.NewBuilder()
	inner.AddNode("deep_gemm", "Gemm", []string{"a", "K"}, []string{"g"})
	inner.AddOutput("g", tensor.Float32, []int64{1, 3})
	b := onnxwire.NewBuilder()
	b.AddInput("a", tensor.Float32, []int64{1, 2})
	b.AddInput("flag", tensor.Bool, nil)
	b.AddInitializer(onnxwire.NewTensor("K", tensor.Float32, []int64{2, 3}, seq(6, 1)))
	b.AddNodeProto(onnxwire.NestedIf(levels, "flag", "out", inner.Graph()))
	b.AddOutput("out", tensor.Float32, []int64{1, 3})
	return b
}

// TestExposeDeepSubgraphs: subgraphs are followed as deep as ONNX Runtime
// reads them (the limit is protobuf's 100 levels of messages); a model
// nested deeper is refused with ErrTooDeep, fast and without memory
// beyond the model's bytes (it used to overflow the stack at 2.5 M levels
// and take 1.5 GB at 1 M).
func TestExposeDeepSubgraphs(t *testing.T) {
	dir := t.TempDir()
	man, err := Expose(context.Background(), writeModel(t, deepGemmModel(32), dir), filepath.Join(dir, "ok"), Options{})
	if err != nil {
		t.Fatalf("32 levels: %v", err)
	}
	if e := man.Entry("K"); e == nil || len(e.Consumers) != 1 || e.Consumers[0].Node != "deep_gemm" || e.Consumers[0].Subgraph == "" {
		t.Fatalf("32 levels: manifest %+v", man.Tensors)
	}
	for _, levels := range []int{34, 200, 100_000} {
		src := writeModel(t, deepGemmModel(levels), dir)
		fi, err := os.Stat(src)
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "deep")
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		start := time.Now()
		_, err = Expose(context.Background(), src, out, Options{})
		elapsed := time.Since(start)
		runtime.ReadMemStats(&after)
		if !errors.Is(err, onnxwire.ErrTooDeep) {
			t.Errorf("%d levels: %v, want ErrTooDeep", levels, err)
		}
		if alloc := int64(after.TotalAlloc - before.TotalAlloc); alloc > fi.Size()+1<<20 {
			t.Errorf("%d levels (%d bytes): refusing allocated %d bytes", levels, fi.Size(), alloc)
		}
		if elapsed > 2*time.Second {
			t.Errorf("%d levels: refusing took %v", levels, elapsed)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%d levels: a refused export created %s", levels, out)
		}
	}
}
