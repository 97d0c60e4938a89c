// Package testutil holds small helpers shared by the module's tests. It
// is imported by _test.go files only.
package testutil

import "testing"

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
