package ort

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/ort/install"
)

func TestLibraryPathFromEnvMissing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope", "libonnxruntime.so.1")
	t.Setenv(LibraryEnv, missing)
	_, err := LibraryPath()
	if !errors.Is(err, ErrLibraryNotFound) {
		t.Fatalf("err = %v, want ErrLibraryNotFound", err)
	}
	checkNotFoundMessage(t, err, missing, LibraryEnv+"="+missing)
}

// checkNotFoundMessage checks that a not-found error names what is missing
// and how every user (with or without a checkout) gets the library.
func checkNotFoundMessage(t *testing.T, err error, mentions ...string) {
	t.Helper()
	if !strings.HasPrefix(err.Error(), "ort: ONNX Runtime shared library not found: ") {
		t.Errorf("error %q does not start with ErrLibraryNotFound's message", err)
	}
	for _, want := range append(mentions, "`shira-ort setup`", "install.Library", LibraryEnv, "ort.WithLibraryPath") {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	for _, bad := range []string{"scripts/", "repository root", "make setup"} {
		if strings.Contains(err.Error(), bad) {
			t.Errorf("error %q mentions %q, which only a checkout has", err, bad)
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
	checkNotFoundMessage(t, err, want+" does not exist")
}

// TestLibraryLayoutIsInstalls checks that ort looks for the library
// exactly where install.Library puts it.
func TestLibraryLayoutIsInstalls(t *testing.T) {
	if LibraryVersion != install.DefaultVersion {
		t.Fatalf("LibraryVersion %s, install.DefaultVersion %s", LibraryVersion, install.DefaultVersion)
	}
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	got, err := CachedLibraryPath()
	if err != nil {
		t.Skip(err) // a platform without a prebuilt library
	}
	want, err := install.CachePath("", "", runtime.GOOS, runtime.GOARCH)
	if err != nil || got != want {
		t.Fatalf("CachedLibraryPath() = %s, install.CachePath = %s, %v", got, want, err)
	}
}

func TestLibraryPathGivenMissing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "libonnxruntime.so.1")
	t.Setenv(LibraryEnv, "")
	_, err := libraryPath(missing)
	if !errors.Is(err, ErrLibraryNotFound) {
		t.Fatalf("err = %v, want ErrLibraryNotFound", err)
	}
	checkNotFoundMessage(t, err, missing+" (given by ort.WithLibraryPath) does not exist")
}

// TestInitWithLibraryPath runs Init in child processes (the library is
// loaded once per process, so each case needs a fresh one; see
// TestInitChild): WithLibraryPath wins over the environment, a missing
// file is ErrLibraryNotFound, a shared library that is not ONNX Runtime is
// named as such, and after a failure a later Init still succeeds.
func TestInitWithLibraryPath(t *testing.T) {
	if os.Getenv("ORT_INIT_CHILD") != "" {
		t.Skip("child process")
	}
	lib, err := LibraryPath()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("ONNX Runtime is required under CI=true: %v", err)
		}
		t.Skipf("ONNX Runtime not available (run `shira-ort setup` or `make setup`): %v", err)
	}
	if lib, err = filepath.Abs(lib); err != nil {
		t.Fatal(err)
	}
	cases := []string{"given", "missing"}
	if otherLibrary() != "" {
		cases = append(cases, "notort")
	} else {
		t.Log("no libc.so.6 found: the not-ONNX-Runtime case is not run")
	}
	for _, c := range cases {
		t.Run(c, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestInitChild$", "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), "ORT_INIT_CHILD="+c, "ORT_INIT_LIB="+lib, "ORT_INIT_TMP="+t.TempDir())
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "--- PASS: TestInitChild") {
				t.Fatalf("child %s: %v\n%s", c, err, out)
			}
		})
	}
}

// otherLibrary returns a shared library that is not ONNX Runtime (libc),
// or "".
func otherLibrary() string {
	for _, p := range []string{"/lib/x86_64-linux-gnu/libc.so.6", "/lib/aarch64-linux-gnu/libc.so.6", "/lib64/libc.so.6", "/usr/lib/libc.so.6"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// TestInitChild is one case of TestInitWithLibraryPath, in a fresh process.
func TestInitChild(t *testing.T) {
	c := os.Getenv("ORT_INIT_CHILD")
	if c == "" {
		t.Skip("run by TestInitWithLibraryPath")
	}
	lib, tmp := os.Getenv("ORT_INIT_LIB"), os.Getenv("ORT_INIT_TMP")
	missing := filepath.Join(tmp, "missing", "libonnxruntime.so.1")
	switch c {
	case "given":
		// The option wins over an environment variable naming a missing file.
		t.Setenv(LibraryEnv, missing)
		if err := Init(WithLibraryPath(lib)); err != nil {
			t.Fatal(err)
		}
		if v := Version(); !strings.HasPrefix(v, "1.") {
			t.Fatalf("Version() = %q", v)
		}
		if err := Init(); err != nil {
			t.Fatalf("Init() after Init(WithLibraryPath): %v", err)
		}
		link := filepath.Join(tmp, "link.so")
		if err := os.Symlink(lib, link); err != nil {
			t.Fatal(err)
		}
		if err := Init(WithLibraryPath(link)); err != nil {
			t.Fatalf("the same library through a symlink: %v", err)
		}
		other := filepath.Join(tmp, "other.so")
		if err := os.WriteFile(other, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		err := Init(WithLibraryPath(other))
		if err == nil || !strings.Contains(err.Error(), "already loaded from "+lib) || !strings.Contains(err.Error(), other) {
			t.Fatalf("Init(WithLibraryPath(another file)) = %v, want an already-loaded error", err)
		}
	case "missing":
		t.Setenv(LibraryEnv, lib)
		err := Init(WithLibraryPath(missing))
		if !errors.Is(err, ErrLibraryNotFound) {
			t.Fatalf("err = %v, want ErrLibraryNotFound", err)
		}
		checkNotFoundMessage(t, err, missing)
		if err := Init(); err != nil {
			t.Fatalf("Init() after a failed Init: %v", err)
		}
	case "notort":
		t.Setenv(LibraryEnv, lib)
		libc := otherLibrary()
		err := Init(WithLibraryPath(libc))
		if err == nil || errors.Is(err, ErrLibraryNotFound) {
			t.Fatalf("err = %v, want a not-ONNX-Runtime error", err)
		}
		if want := "ort: " + libc + " is not an ONNX Runtime shared library"; !strings.HasPrefix(err.Error(), want) {
			t.Fatalf("err = %v, want it to start with %q", err, want)
		}
		if err := Init(); err != nil {
			t.Fatalf("Init() after a failed Init: %v", err)
		}
	default:
		t.Fatalf("unknown case %q", c)
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
	_, err := OpenModel(context.Background(), testdata("mlp_plain.onnx"), &Options{Providers: providers("cpu", "CUDAExecutionProvider")})
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
		s := mustOpenModel(t, testdata("mlp_plain.onnx"), &Options{Providers: providers(p)})
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
