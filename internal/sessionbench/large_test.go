package sessionbench

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// TestLargeModelModes opens the 3.9 GB TinyLlama-shaped model (external
// data, > 2 GB) in every mode, switches an adapter in and out and checks:
// baked and rebaked-hybrid outputs agree bitwise, live agrees within float
// tolerance, and revert restores the base outputs bitwise. Slow (minutes,
// ~16 GB RAM, 8 GB disk): only with SHIRA_LARGE_TEST=1 (SHIRA_BENCH_DIR
// caches the model).
func TestLargeModelModes(t *testing.T) {
	if os.Getenv("SHIRA_LARGE_TEST") != "1" {
		t.Skip("set SHIRA_LARGE_TEST=1 to run (minutes, ~16 GB RAM)")
	}
	if err := ort.Init(); err != nil {
		t.Fatal(err)
	}
	dir := os.Getenv("SHIRA_BENCH_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	_, exported, err := Generate(LLM, filepath.Join(dir, string(LLM)))
	if err != nil {
		t.Fatal(err)
	}
	a, err := RandomAdapter(exported, 0.01, 1)
	if err != nil {
		t.Fatal(err)
	}
	in := input(LLM, 2)
	outs := map[ort.Mode][2][]byte{}
	for _, mode := range []ort.Mode{ort.ModeBaked, ort.ModeHybrid, ort.ModeLive} {
		s, err := ort.Open(exported, &ort.Options{Mode: mode, IntraOpThreads: 2})
		if err != nil {
			t.Fatalf("%v: %v", mode, err)
		}
		run := func() []byte {
			out, err := s.Run(in)
			if err != nil {
				t.Fatalf("%v: %v", mode, err)
			}
			return out["Y"].Data
		}
		base := run()
		if err := s.Set(patch.Default(a)); err != nil {
			t.Fatal(err)
		}
		if mode == ort.ModeHybrid {
			if err := s.WaitBaked(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		adapted := run()
		if bytes.Equal(adapted, base) {
			t.Fatalf("%v: the adapter changed nothing", mode)
		}
		if err := s.Revert(); err != nil {
			t.Fatal(err)
		}
		if mode == ort.ModeHybrid {
			if err := s.WaitBaked(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(run(), base) {
			t.Fatalf("%v: revert did not restore the base outputs", mode)
		}
		outs[mode] = [2][]byte{base, adapted}
		s.Close()
	}
	for i := range 2 {
		if !bytes.Equal(outs[ort.ModeBaked][i], outs[ort.ModeHybrid][i]) {
			t.Fatalf("output %d: baked and rebaked hybrid differ", i)
		}
		live, baked := tensor.Float32s(outs[ort.ModeLive][i]), tensor.Float32s(outs[ort.ModeBaked][i])
		for k := range live {
			if math.Abs(float64(live[k]-baked[k])) > 1e-3*(1+math.Abs(float64(baked[k]))) {
				t.Fatalf("output %d[%d]: live %v, baked %v", i, k, live[k], baked[k])
			}
		}
	}
}
