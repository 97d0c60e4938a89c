// Package orttest is what tests across the module share to reach ONNX
// Runtime. (The ort package's own tests keep a copy: they cannot import
// a package that imports ort.)
package orttest

import (
	"os"
	"testing"

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
		tb.Skipf("ONNX Runtime not available (run `%s`): %v", ort.SetupCommand, err)
	}
}
