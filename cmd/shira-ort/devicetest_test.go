package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/internal/orttest"
)

// TestDeviceTestBundle: a bundle made on the host (devicetest make) passes
// on the host (devicetest run) in every mode, with the CPU provider and with
// absent providers falling back; without --provider-fallback an absent
// provider fails clearly; a wrong reference fails.
func TestDeviceTestBundle(t *testing.T) {
	orttest.Require(t)
	tmp := t.TempDir()
	p := func(n string) string { return filepath.Join(tmp, n) }
	mustCLI(t, "export", filepath.Join("..", "..", "models", "tiny", "model.onnx"), "-o", p("tiny"))
	mustCLI(t, "create", "--model", p("tiny"), "--mask", "rand", "--density", "0.05", "--scale", "0.2", "--seed", "1", "-o", p("a.shira"))
	mustCLI(t, "create", "--model", p("tiny"), "--mask", "wm", "--density", "0.02", "--scale", "0.2", "--seed", "2", "-o", p("b.shira"))

	out, err := runCLI(t, "devicetest", "make", "--model", p("tiny"),
		"--adapter", p("a.shira"), "--adapter", p("a.shira")+":0.5+"+p("b.shira"), "-o", p("bundle"))
	if err != nil {
		t.Fatalf("devicetest make: %v\n%s", err, out)
	}
	t.Log(out)
	for _, mode := range []string{"live", "baked", "hybrid"} {
		out, err = runCLI(t, "devicetest", "run", p("bundle"), "--mode", mode, "--runs", "3")
		if err != nil || !strings.Contains(out, "PASS") {
			t.Fatalf("%s: %v\n%s", mode, err, out)
		}
	}
	t.Log(out)
	out, err = runCLI(t, "devicetest", "run", p("bundle"), "--runs", "2", "--provider", "nnapi:fp16=1", "--provider", "qnn:backend_path=libQnnHtp.so", "--provider-fallback")
	if err != nil || !strings.Contains(out, "PASS") || !strings.Contains(out, "fell back to CPU") {
		t.Fatalf("fallback: %v\n%s", err, out)
	}
	out, err = runCLI(t, "devicetest", "run", p("bundle"), "--provider", "nnapi")
	if err == nil || !strings.Contains(err.Error(), "nnapi") || !strings.Contains(err.Error(), "not available") {
		t.Fatalf("absent nnapi without fallback: %v\n%s", err, out)
	}
	// A bundle that fails its references fails the run.
	if err := os.WriteFile(filepath.Join(p("bundle"), "ref", "config1", "y.npy"), readFile(t, filepath.Join(p("bundle"), "ref", "base", "y.npy")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = runCLI(t, "devicetest", "run", p("bundle"), "--runs", "1")
	if err == nil || !strings.Contains(out, "FAIL: output y[") {
		t.Fatalf("a wrong reference passed: %v\n%s", err, out)
	}
	// An input the model does not have is refused.
	if _, err := runCLI(t, "devicetest", "make", "--model", p("tiny"), "--adapter", p("a.shira"), "--input", "z="+filepath.Join(p("bundle"), "inputs", "x.npy"), "-o", p("bundle2")); err == nil || !strings.Contains(err.Error(), "no such input") {
		t.Fatalf("devicetest make --input z: %v", err)
	}
	// run and inspect take the provider flags too.
	out, err = runCLI(t, "inspect", "--providers", "--provider", "xnnpack", "--provider-fallback", p("tiny"))
	if err != nil || !strings.Contains(out, "live session") || !strings.Contains(out, "baked session") || !strings.Contains(out, "xnnpack: fell back") {
		t.Fatalf("inspect --providers: %v\n%s", err, out)
	}
	t.Log(out)
	_, err = runCLI(t, "run", "--model", p("tiny"), "--input", "x="+filepath.Join(p("bundle"), "inputs", "x.npy"),
		"--output-dir", p("out"), "--provider", "coreml")
	if err == nil || !strings.Contains(err.Error(), "coreml") {
		t.Fatalf("run --provider coreml: %v", err)
	}
}
