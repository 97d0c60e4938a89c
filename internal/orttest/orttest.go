// Package orttest is what tests across the module share to reach ONNX
// Runtime and the third-party models. (The ort package's own tests keep a
// copy of Require: they cannot import a package that imports ort.)
package orttest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/shira-ort/shira-ort/internal/blas"
	"github.com/shira-ort/shira-ort/ort"
)

// Require initializes ONNX Runtime (ort.Init) for a test that needs it.
// When the library cannot be loaded, the test fails under CI=true (CI must
// never pass by skipping them) and is skipped elsewhere, naming the
// command that installs the library.
func Require(tb testing.TB) {
	tb.Helper()
	if err := ort.Init(); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("ONNX Runtime is required under CI=true: %v", err)
		}
		tb.Skipf("ONNX Runtime not available (run `shira-ort setup` or `make setup`): %v", err)
	}
}

// RequireBLAS loads the BLAS library of the in-place LoRA kernel
// (OpenBLAS, package lora) for a test that needs it: it fails under
// CI=true, whose script installs it, and skips elsewhere.
func RequireBLAS(tb testing.TB) {
	tb.Helper()
	if err := blas.Load(); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("CI=true and %v", err)
		}
		tb.Skip(err)
	}
}

// ThirdPartyModel returns the path of a file that scripts/fetch-models.sh
// (make setup) caches under the user cache directory. When it is missing
// the test fails under CI=true and is skipped elsewhere, naming the
// script.
func ThirdPartyModel(tb testing.TB, name string) string {
	tb.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		tb.Fatal(err)
	}
	p := filepath.Join(cache, "shira-ort", "models", name)
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("%s missing: run `bash scripts/fetch-models.sh` (make setup)", p)
		}
		tb.Skipf("%s missing: run `bash scripts/fetch-models.sh` (make setup)", p)
	}
	return p
}
