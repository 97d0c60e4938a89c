// Package testutil holds small helpers shared by the module's tests. It
// is imported by _test.go files only.
package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
)

// Replace sets *target to val for the rest of the test and restores the
// previous value through tb.Cleanup, so a test that swaps a package
// variable (a tuning knob, a size limit, a hook) cannot leak the new value
// into later tests, however it ends. The test may keep changing *target
// afterwards; the value it had before Replace is what Cleanup restores.
// Tests that call Replace must not run in parallel with tests that read
// the same variable.
func Replace[T any](tb testing.TB, target *T, val T) {
	tb.Helper()
	if target == nil {
		tb.Fatal("testutil.Replace: nil target")
	}
	old := *target
	*target = val
	tb.Cleanup(func() { *target = old })
}

// debianPython is the interpreter Debian's python3-onnx installs into
// (not whatever python3 comes first on PATH, such as a pyenv shim).
const debianPython = "/usr/bin/python3"

// pythonONNXErr is the result of checking, once per test binary, that
// debianPython can import onnx.
var pythonONNXErr = sync.OnceValue(func() error {
	if out, err := exec.Command(debianPython, "-c", "import onnx").CombinedOutput(); err != nil {
		return fmt.Errorf("%s cannot import onnx (apt-get install python3-onnx): %w\n%s", debianPython, err, out)
	}
	return nil
})

// PythonONNX returns the python3 that has the onnx module, for tests
// that cross-check the module's ONNX output with onnx.checker. When it is
// missing, the test fails under CI=true (CI must never pass by skipping
// the independent check) and ok is false elsewhere, the caller then
// skipping its check.
func PythonONNX(tb testing.TB) (python string, ok bool) {
	tb.Helper()
	if err := pythonONNXErr(); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("python3-onnx is required under CI=true: %v", err)
		}
		return "", false
	}
	return debianPython, true
}
