package sessionbench

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/tensor"
)

// Model names a benchmark model.
type Model string

// The benchmark models.
const (
	// MLP is 8 layers of MatMul(1024→4096) → Relu → MatMul(4096→1024):
	// 67 M fp32 parameters (268 MB), weights inline in the source model.
	MLP Model = "mlp"
	// LLM has TinyLlama-1.1B's weight shapes: 22 blocks of q/o
	// (2048×2048), k/v (2048×256), gate/up (2048×5632) and down
	// (5632×2048) MatMuls with a simplified data flow (no attention
	// softmax, no norms), then the LM head (2048×32000): 1.03 B fp32
	// parameters (4.1 GB) in external data. Only the token embedding
	// (a Gather, not a linear layer) is left out.
	LLM Model = "llm"
)

// Width returns the model's input width.
func (m Model) Width() int {
	if m == LLM {
		return 2048
	}
	return 1024
}

// generatorVersion changes whenever a generator writes a different
// model, so a cached copy from an older version is regenerated.
var generatorVersion = map[Model]string{MLP: "1", LLM: "2 (with lm_head)"}

// versionFile records, in a generated model's directory, the generator
// version that wrote it.
const versionFile = "GENERATOR_VERSION"

// Generate writes the source model into dir/src and exports it with
// export.Expose into dir/exported (skipped when both exist and were
// written by this generator version). It returns the source model path
// and the exported directory.
func Generate(m Model, dir string) (src, exported string, err error) {
	src = filepath.Join(dir, "src", "model.onnx")
	exported = filepath.Join(dir, "exported")
	stamp := filepath.Join(dir, versionFile)
	if got, err := os.ReadFile(stamp); err == nil && string(got) == generatorVersion[m] &&
		fileExists(src) && fileExists(filepath.Join(exported, export.ManifestFile)) {
		return src, exported, nil
	}
	for _, old := range []string{filepath.Dir(src), exported, stamp} {
		if err := os.RemoveAll(old); err != nil {
			return "", "", fmt.Errorf("sessionbench: removing the outdated %s: %w", old, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
		return "", "", fmt.Errorf("sessionbench: %w", err)
	}
	switch m {
	case MLP:
		err = writeMLP(src)
	case LLM:
		err = writeLLM(src)
	default:
		err = fmt.Errorf("unknown model %q", m)
	}
	if err != nil {
		return "", "", fmt.Errorf("sessionbench: generating %s: %w", m, err)
	}
	if _, err := export.Expose(context.Background(), src, exported, export.Options{}); err != nil {
		return "", "", fmt.Errorf("sessionbench: exporting %s: %w", m, err)
	}
	if err := os.WriteFile(stamp, []byte(generatorVersion[m]), 0o644); err != nil {
		return "", "", fmt.Errorf("sessionbench: %w", err)
	}
	return src, exported, nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// randomWeights returns n uniform values in ±scale.
func randomWeights(rng *rand.Rand, n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = (rng.Float32()*2 - 1) * scale
	}
	return v
}

func writeMLP(path string) error {
	const d, h, layers = 1024, 4096, 8
	rng := rand.New(rand.NewPCG(1, 2))
	b := onnxwire.NewBuilder()
	b.AddInput("X", tensor.Float32, []int64{-1, d}, "batch")
	x := "X"
	for l := range layers {
		w1, w2 := fmt.Sprintf("l%d.up", l), fmt.Sprintf("l%d.down", l)
		b.AddInitializer(onnxwire.NewTensor(w1, tensor.Float32, []int64{d, h}, tensor.Bytes(randomWeights(rng, d*h, float32(1/math.Sqrt(d))))))
		b.AddInitializer(onnxwire.NewTensor(w2, tensor.Float32, []int64{h, d}, tensor.Bytes(randomWeights(rng, h*d, float32(1/math.Sqrt(h))))))
		u, r, y := fmt.Sprintf("u%d", l), fmt.Sprintf("r%d", l), fmt.Sprintf("y%d", l)
		b.AddNode("mm_up"+fmt.Sprint(l), "MatMul", []string{x, w1}, []string{u})
		b.AddNode("relu"+fmt.Sprint(l), "Relu", []string{u}, []string{r})
		b.AddNode("mm_down"+fmt.Sprint(l), "MatMul", []string{r, w2}, []string{y})
		x = y
	}
	b.AddNode("out", "Identity", []string{x}, []string{"Y"})
	b.AddOutput("Y", tensor.Float32, []int64{-1, d}, "batch")
	return b.WriteFile(path)
}

// writeLLM writes the model with every weight in path + ".data".
func writeLLM(path string) error {
	const d, kv, ff, layers, vocab = 2048, 256, 5632, 22, 32000
	rng := rand.New(rand.NewPCG(3, 4))
	dataName := filepath.Base(path) + ".data"
	f, err := os.Create(filepath.Join(filepath.Dir(path), dataName))
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<22)
	var off int64
	b := onnxwire.NewBuilder()
	addW := func(name string, rows, cols int) error {
		v := randomWeights(rng, rows*cols, float32(1/math.Sqrt(float64(rows))))
		raw := tensor.Bytes(v)
		if _, err := bw.Write(raw); err != nil {
			return err
		}
		b.AddInitializer(onnxwire.TensorSpec{Name: name, DType: tensor.Float32, Dims: []int64{int64(rows), int64(cols)},
			External: &onnxwire.ExternalData{Location: dataName, Offset: off, Length: int64(len(raw))}}.Tensor())
		off += int64(len(raw))
		return nil
	}
	b.AddInput("X", tensor.Float32, []int64{-1, d}, "batch")
	b.AddInitializer(onnxwire.NewTensor("reps", tensor.Int64, []int64{2}, tensor.Bytes([]int64{1, d / kv})))
	x := "X"
	for l := range layers {
		p := func(s string) string { return fmt.Sprintf("l%d.%s", l, s) }
		for _, w := range []struct {
			n          string
			rows, cols int
		}{{"q", d, d}, {"k", d, kv}, {"v", d, kv}, {"o", d, d}, {"gate", d, ff}, {"up", d, ff}, {"down", ff, d}} {
			if err := addW(p(w.n), w.rows, w.cols); err != nil {
				return err
			}
		}
		// attention stand-in: h = q + tile(k*v); x1 = x + h·Wo
		b.AddNode(p("mm_q"), "MatMul", []string{x, p("q")}, []string{p("Q")})
		b.AddNode(p("mm_k"), "MatMul", []string{x, p("k")}, []string{p("K")})
		b.AddNode(p("mm_v"), "MatMul", []string{x, p("v")}, []string{p("V")})
		b.AddNode(p("kv"), "Mul", []string{p("K"), p("V")}, []string{p("KV")})
		b.AddNode(p("tile"), "Tile", []string{p("KV"), "reps"}, []string{p("KVt")})
		b.AddNode(p("h"), "Add", []string{p("Q"), p("KVt")}, []string{p("H")})
		b.AddNode(p("mm_o"), "MatMul", []string{p("H"), p("o")}, []string{p("O")})
		b.AddNode(p("res1"), "Add", []string{x, p("O")}, []string{p("X1")})
		// SwiGLU MLP: x2 = x1 + (silu(x1·Wg) * x1·Wu)·Wd
		b.AddNode(p("mm_gate"), "MatMul", []string{p("X1"), p("gate")}, []string{p("G")})
		b.AddNode(p("mm_up"), "MatMul", []string{p("X1"), p("up")}, []string{p("U")})
		b.AddNode(p("sig"), "Sigmoid", []string{p("G")}, []string{p("SG")})
		b.AddNode(p("silu"), "Mul", []string{p("G"), p("SG")}, []string{p("S")})
		b.AddNode(p("glu"), "Mul", []string{p("S"), p("U")}, []string{p("M")})
		b.AddNode(p("mm_down"), "MatMul", []string{p("M"), p("down")}, []string{p("D")})
		b.AddNode(p("res2"), "Add", []string{p("X1"), p("D")}, []string{p("X2")})
		x = p("X2")
	}
	if err := addW("lm_head", d, vocab); err != nil {
		return err
	}
	b.AddNode("mm_lm_head", "MatMul", []string{x, "lm_head"}, []string{"Y"})
	b.AddOutput("Y", tensor.Float32, []int64{-1, vocab}, "batch")
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return b.WriteFile(path)
}
