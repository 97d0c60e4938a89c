package peft

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nlpodyssey/safetensors"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/atomicfile"
)

func fixture(tb testing.TB, parts ...string) []byte {
	b, err := os.ReadFile(filepath.Join(append([]string{"..", "models", "peft"}, parts...)...))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// withBareCopy returns the safetensors file b with the tensor key also
// stored under its name without "base_model.model.".
func withBareCopy(tb testing.TB, b []byte, key string) []byte {
	st, err := safetensors.Deserialize(b)
	if err != nil {
		tb.Fatal(err)
	}
	m := map[string]safetensors.TensorView{}
	for _, t := range st.Tensors() {
		m[t.Name] = t.TensorView
	}
	m[strings.TrimPrefix(key, keyPrefix)] = m[key]
	out, err := safetensors.Serialize(m, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// FuzzOpen writes an arbitrary adapter_config.json and
// adapter_model.safetensors into a checkpoint directory, opens it and reads
// it as SHiRA (converted against the exported fixture base model) or LoRA.
// Every input must give a result or an error wrapping ErrCheckpoint: no
// panic, no hang, no allocation the file cannot back.
func FuzzOpen(f *testing.F) {
	for _, d := range []string{"shira_a", "shira_b", "lora"} {
		f.Add(fixture(f, d, ConfigFile), fixture(f, d, WeightsFile))
	}
	// lora_alpha 0 and missing, an r whose r*(in+out) overflows, and a
	// module under both a prefixed and a bare key
	f.Add([]byte(`{"peft_type": "LORA", "r": 4, "lora_alpha": 0, "alpha_pattern": {"q_proj": 0}}`), fixture(f, "lora", WeightsFile))
	f.Add([]byte(`{"peft_type": "LORA", "r": 4}`), fixture(f, "lora", WeightsFile))
	f.Add([]byte(`{"peft_type": "SHIRA", "r": 9223372036854775807}`), fixture(f, "shira_a", WeightsFile))
	f.Add(fixture(f, "lora", ConfigFile), withBareCopy(f, fixture(f, "lora", WeightsFile), "base_model.model.lm_head.lora_A.weight"))
	f.Add(fixture(f, "shira_a", ConfigFile), withBareCopy(f, fixture(f, "shira_a", WeightsFile), "base_model.model.lm_head.shira_weight"))
	atomicfile.DisableSync()
	base := filepath.Join(f.TempDir(), "base")
	if _, err := export.Expose(context.Background(), filepath.Join("..", "models", "peft", "base.onnx"), base, export.Options{}); err != nil {
		f.Fatal(err)
	}
	m, err := export.Open(base)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { m.Close() })
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, config, weights []byte) {
		defer time.AfterFunc(10*time.Second, func() { panic("fuzz input took longer than 10s") }).Stop()
		if err := os.WriteFile(filepath.Join(dir, ConfigFile), config, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, WeightsFile), weights, 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Open(dir)
		if err != nil {
			return
		}
		c.Keys()
		switch c.Config.PeftType {
		case "SHIRA":
			mods, err := c.Shira()
			if err != nil {
				return
			}
			for _, mod := range mods {
				if len(mod.Dim0) != mod.NNZ() || len(mod.Dim1) != mod.NNZ() {
					t.Fatalf("module %s: %d/%d indices for %d values", mod.Module, len(mod.Dim0), len(mod.Dim1), mod.NNZ())
				}
			}
			if a, _, err := ConvertShira(c, m, ConvertOptions{Name: "fuzz"}); err == nil {
				if err := a.Validate(); err != nil {
					t.Fatalf("ConvertShira returned an invalid adapter: %v", err)
				}
			}
		case "LORA":
			mods, err := c.Lora()
			if err != nil {
				return
			}
			for _, mod := range mods {
				if mod.R <= 0 || mod.In < 0 || mod.Out < 0 || len(mod.A) != mod.R*mod.In || len(mod.B) != mod.Out*mod.R {
					t.Fatalf("module %s: r=%d in=%d out=%d with |A|=%d |B|=%d", mod.Module, mod.R, mod.In, mod.Out, len(mod.A), len(mod.B))
				}
				if s := float64(mod.Scale); math.IsNaN(s) || math.IsInf(s, 0) {
					t.Fatalf("module %s: scale %g", mod.Module, s)
				}
			}
		}
	})
}
