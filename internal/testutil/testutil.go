// Package testutil holds small helpers shared by the module's tests. It
// is imported by _test.go files only.
package testutil

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
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

// debianPython is the interpreter Debian's python3-* packages install
// into (not whatever python3 comes first on PATH, such as a pyenv shim).
const debianPython = "/usr/bin/python3"

// pythonChecks caches, per module, whether debianPython imports it
// (module -> func() error made by sync.OnceValue).
var pythonChecks sync.Map

// Python returns Debian's python3 when it can import module ("onnx" from
// python3-onnx, "numpy" from python3-numpy), for tests that cross-check
// the module's output with the reference implementation. When it cannot,
// the test fails under CI=true (CI must never pass by skipping the
// independent check) and ok is false elsewhere, the caller then skipping
// its check. The import is tried once per test binary and module.
func Python(tb testing.TB, module string) (python string, ok bool) {
	tb.Helper()
	check, _ := pythonChecks.LoadOrStore(module, sync.OnceValue(func() error {
		if out, err := exec.Command(debianPython, "-c", "import "+module).CombinedOutput(); err != nil {
			return fmt.Errorf("%s cannot import %s (apt-get install python3-%s): %w\n%s", debianPython, module, module, err, out)
		}
		return nil
	}))
	if err := check.(func() error)(); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("python3-%s is required under CI=true: %v", module, err)
		}
		return "", false
	}
	return debianPython, true
}

// CheckFlatcOutput runs `flatc --go -o TMP schema` in dir and fails the
// test when a file flatc writes differs from the one committed under
// dir/out (the go:generate output): generated code that drifts from its
// schema. Without flatc (Debian's flatbuffers-compiler) the test fails
// under CI=true and is skipped elsewhere.
func CheckFlatcOutput(tb testing.TB, dir, schema, out string) {
	tb.Helper()
	flatc, err := exec.LookPath("flatc")
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("flatc is required under CI=true (apt-get install flatbuffers-compiler): %v", err)
		}
		tb.Skipf("flatc not installed (apt-get install flatbuffers-compiler): %v", err)
	}
	tmp := tb.TempDir()
	cmd := exec.Command(flatc, "--go", "-o", tmp, schema)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("flatc --go %s: %v\n%s", schema, err, b)
	}
	n := 0
	err = filepath.WalkDir(tmp, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(tmp, p)
		want, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		got, err := os.ReadFile(filepath.Join(dir, out, rel))
		if err != nil {
			tb.Errorf("flatc writes %s, which is not committed under %s: run go generate", rel, out)
			return nil
		}
		if !bytes.Equal(got, want) {
			tb.Errorf("%s differs from what flatc generates from %s: run go generate", filepath.Join(out, rel), schema)
		}
		n++
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	if n == 0 {
		tb.Fatalf("flatc wrote nothing for %s", schema)
	}
}
