package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/shira-ort/shira-ort/internal/npyfile"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// TestNonFiniteRefused: apply and run refuse an adapter configuration that
// would make weights NaN or infinite (here alpha 3e38), before writing
// anything.
func TestNonFiniteRefused(t *testing.T) {
	orttest.Require(t)
	tmp, _, dir := exportTiny(t)
	a := filepath.Join(tmp, "a.shira")
	mustCLI(t, "create", "--model", dir, "--density", "0.05", "--scale", "100", "--seed", "1", "-o", a)
	out := filepath.Join(tmp, "fused.onnx")
	if _, err := runCLI(t, "apply", "--model", dir, "--adapter", a+":3e38", "-o", out); !errors.Is(err, patch.ErrNonFinite) {
		t.Fatalf("apply with alpha 3e38 = %v, want patch.ErrNonFinite", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused apply wrote %s: %v", out, err)
	}
	x, err := tensor.FromFloat32([]int64{1, 16}, make([]float32, 16))
	if err != nil {
		t.Fatal(err)
	}
	xin := filepath.Join(tmp, "x.npy")
	if err := npyfile.WriteFile(xin, x); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "run", "--model", dir, "--adapter", a+":3e38", "--input", "x="+xin, "--output-dir", filepath.Join(tmp, "o")); !errors.Is(err, patch.ErrNonFinite) {
		t.Fatalf("run with alpha 3e38 = %v, want patch.ErrNonFinite", err)
	}
	mustCLI(t, "apply", "--model", dir, "--adapter", a+":0.5", "-o", out) // a finite one still works
}
