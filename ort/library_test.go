package ort

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestLibraryPathFromEnvMissing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope", "libonnxruntime.so.1")
	t.Setenv(LibraryEnv, missing)
	_, err := LibraryPath()
	if !errors.Is(err, ErrLibraryNotFound) {
		t.Fatalf("err = %v, want ErrLibraryNotFound", err)
	}
	for _, want := range []string{missing, LibraryEnv, "bash scripts/setup-ort.sh", "make setup"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestLibraryPathCacheMissing(t *testing.T) {
	cache := t.TempDir()
	t.Setenv(LibraryEnv, "")
	t.Setenv("XDG_CACHE_HOME", cache)
	want, err := CachedLibraryPath()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(want, filepath.Join(cache, "shira-ort", "onnxruntime", LibraryVersion)) {
		t.Fatalf("cached path %s is not under %s", want, cache)
	}
	_, err = LibraryPath()
	if !errors.Is(err, ErrLibraryNotFound) {
		t.Fatalf("err = %v, want ErrLibraryNotFound", err)
	}
	for _, s := range []string{want, "bash scripts/setup-ort.sh", "make setup", LibraryEnv} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
}

func TestInitIdempotentConcurrent(t *testing.T) {
	requireORT(t)
	errs := make(chan error, 8)
	for range 8 {
		go func() { errs <- Init() }()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if v := Version(); !strings.HasPrefix(v, "1.") {
		t.Fatalf("Version() = %q", v)
	}
}

func TestUnsupportedProvider(t *testing.T) {
	_, err := OpenModel(context.Background(), testdata("mlp_plain.onnx"), &Options{ExecutionProviders: []string{"cpu", "CUDAExecutionProvider"}})
	if err == nil {
		t.Fatal("CUDA accepted")
	}
	for _, s := range []string{`"CUDAExecutionProvider"`, "not supported", "CPU"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
}

func TestCPUProviderSpellings(t *testing.T) {
	requireORT(t)
	for _, p := range []string{"cpu", "CPU", "CPUExecutionProvider"} {
		s := mustOpenModel(t, testdata("mlp_plain.onnx"), &Options{ExecutionProviders: []string{p}})
		s.Close()
	}
}

func TestParseOptimizationLevel(t *testing.T) {
	for _, l := range []OptimizationLevel{OptimizeAll, OptimizeDisable, OptimizeBasic, OptimizeExtended} {
		got, err := ParseOptimizationLevel(l.String())
		if err != nil || got != l {
			t.Errorf("ParseOptimizationLevel(%q) = %v, %v", l.String(), got, err)
		}
	}
	if _, err := ParseOptimizationLevel("max"); err == nil {
		t.Error("accepted max")
	}
}
