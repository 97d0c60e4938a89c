package peft

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

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

// FuzzOpen writes an arbitrary adapter_config.json and
// adapter_model.safetensors into a checkpoint directory, opens it and reads
// it as SHiRA (converted against the exported fixture base model) or LoRA.
// Every input must give a result or an error wrapping ErrCheckpoint: no
// panic, no hang, no allocation the file cannot back.
func FuzzOpen(f *testing.F) {
	for _, d := range []string{"shira_a", "shira_b", "lora"} {
		f.Add(fixture(f, d, ConfigFile), fixture(f, d, WeightsFile))
	}
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
			}
		}
	})
}
