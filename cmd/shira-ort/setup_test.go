package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/models"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/ort/install"
)

// fakePackage is a gzipped onnxruntime-node-like tarball holding a fake
// library for each architecture.
func fakePackage(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, arch := range []string{"x64", "arm64"} {
		data := []byte("fake " + arch + " library")
		if err := tw.WriteHeader(&tar.Header{Name: "package/bin/napi-v6/linux/" + arch + "/libonnxruntime.so.1", Mode: 0o755, Size: int64(len(data))}); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

// sri is b's sha512 integrity string, as npm registries publish it.
func sri(b []byte) string {
	s := sha512.Sum512(b)
	return "sha512-" + base64.StdEncoding.EncodeToString(s[:])
}

func TestSetupCommand(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the library is only installed on linux")
	}
	tarball := fakePackage(t)
	var downloads int
	mux := http.NewServeMux()
	var srv *httptest.Server
	mux.HandleFunc("/onnxruntime-node/1.24.1", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"name": "onnxruntime-node", "version": "1.24.1", "dist": map[string]string{
			"tarball": srv.URL + "/onnxruntime-node/-/onnxruntime-node-1.24.1.tgz", "integrity": sri(tarball)}})
	})
	mux.HandleFunc("/onnxruntime-node/-/onnxruntime-node-1.24.1.tgz", func(w http.ResponseWriter, r *http.Request) {
		downloads++
		w.Write(tarball)
	})
	srv = httptest.NewServer(mux)
	defer srv.Close()

	cache := t.TempDir()
	lib := filepath.Join(cache, "shira-ort", "onnxruntime", "1.24.1", "linux-arm64", "libonnxruntime.so.1")
	out, log, err := execCLI(t.Context(), "setup", "--arch", "aarch64", "--registry", srv.URL, "--cache-dir", cache)
	if err != nil {
		t.Fatalf("setup: %v\n%s%s", err, out, log)
	}
	want := fmt.Sprintf("fetched: %s (onnxruntime-node@1.24.1)\n%s\nexport ONNXRUNTIME_SHARED_LIBRARY_PATH=%s\n", lib, lib, lib)
	if out != want {
		t.Fatalf("output\n%s\nwant\n%s", out, want)
	}
	if !strings.Contains(log, "registry: "+srv.URL) || !strings.Contains(log, "integrity: sha512 matches") {
		t.Errorf("progress on stderr:\n%s", log)
	}
	if got, _ := os.ReadFile(lib); string(got) != "fake arm64 library" {
		t.Fatalf("installed %q", got)
	}
	out, log, err = execCLI(t.Context(), "setup", "--arch", "arm64", "--registry", srv.URL, "--cache-dir", cache)
	if err != nil || !strings.HasPrefix(out, "cached: "+lib+" (onnxruntime-node@1.24.1, nothing downloaded)\n") || log != "" || downloads != 1 {
		t.Fatalf("second run: %v, %d downloads\n%s%s", err, downloads, out, log)
	}

	// Offline from a tarball with an explicit integrity: no registry at all.
	file := filepath.Join(t.TempDir(), "onnxruntime-node-1.24.1.tgz")
	if err := os.WriteFile(file, tarball, 0o644); err != nil {
		t.Fatal(err)
	}
	cache2 := t.TempDir()
	out, log, err = execCLI(t.Context(), "setup", "--arch", "x64", "--tarball", file, "--integrity", sri(tarball), "--registry", "http://127.0.0.1:1", "--cache-dir", cache2)
	if err != nil || !strings.HasPrefix(out, "fetched: "+filepath.Join(cache2, "shira-ort", "onnxruntime", "1.24.1", "linux-x64", "libonnxruntime.so.1")) {
		t.Fatalf("offline: %v\n%s%s", err, out, log)
	}
	_, _, err = execCLI(t.Context(), "setup", "--arch", "x64", "--tarball", file, "--integrity", sri([]byte("other")), "--cache-dir", t.TempDir())
	if !errors.Is(err, install.ErrIntegrity) {
		t.Fatalf("wrong --integrity: %v", err)
	}
	if _, _, err := execCLI(t.Context(), "setup", "--arch", "sparc"); err == nil || !strings.Contains(err.Error(), "--arch") {
		t.Fatalf("--arch sparc: %v", err)
	}
}

func TestSetupShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/home/u/.cache/shira-ort/onnxruntime/1.24.1/linux-x64/libonnxruntime.so.1": "/home/u/.cache/shira-ort/onnxruntime/1.24.1/linux-x64/libonnxruntime.so.1",
		"/home/a b/lib.so": "'/home/a b/lib.so'",
		"/it's/lib.so":     `'/it'\''s/lib.so'`,
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestErrorHintLibraryNotFound(t *testing.T) {
	err := fmt.Errorf("opening model: %w", fmt.Errorf("%w: /x does not exist", ort.ErrLibraryNotFound))
	if h := errorHint(err); !strings.Contains(h, "run `shira-ort setup`") {
		t.Fatalf("hint %q", h)
	}
	if h := errorHint(errors.New("other")); h != "" {
		t.Fatalf("hint for another error: %q", h)
	}
}

// TestSetupFromEmptyHome is the acceptance test: the CLI built and
// run like after `go install` — HOME and XDG_CACHE_HOME a fresh empty
// directory, working directory outside the repository — first says to run
// `shira-ort setup`, then `shira-ort setup` downloads ONNX Runtime from the
// real npm registry into that HOME's cache, a second run downloads nothing
// (its registry is unreachable), and a command that needs ONNX Runtime
// finds and loads it with no further configuration.
//
// It needs the network: it runs under CI=true (and fails there when the
// registry is unreachable) or with SHIRA_NETWORK_TESTS=1, and is skipped
// otherwise.
func TestSetupFromEmptyHome(t *testing.T) {
	if os.Getenv("CI") != "true" && os.Getenv("SHIRA_NETWORK_TESTS") != "1" {
		t.Skip("downloads ONNX Runtime from the npm registry; runs under CI=true or SHIRA_NETWORK_TESTS=1")
	}
	if _, err := install.CachePath(t.TempDir(), "", runtime.GOOS, runtime.GOARCH); err != nil {
		t.Skipf("no prebuilt ONNX Runtime for this platform: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	// The registry as the user running the tests has it configured (the
	// empty HOME below has no npmrc to say otherwise).
	registry, err := install.Registry(ctx)
	if err != nil {
		t.Fatalf("cannot tell which npm registry to use: %v", err)
	}

	bin := filepath.Join(t.TempDir(), "shira-ort")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	home := t.TempDir()
	work := t.TempDir()
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "HOME", k == "XDG_CACHE_HOME", k == "XDG_CONFIG_HOME", k == ort.LibraryEnv, strings.HasPrefix(strings.ToLower(k), "npm_config_"):
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "HOME="+home, "XDG_CACHE_HOME="+filepath.Join(home, ".cache"))
	run := func(extraEnv []string, args ...string) (string, string, error) {
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = work
		cmd.Env = append(append([]string(nil), env...), extraEnv...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		return out.String(), errOut.String(), err
	}

	model := filepath.Join(work, "tiny.onnx")
	if err := os.WriteFile(model, models.Tiny, 0o644); err != nil {
		t.Fatal(err)
	}
	// Before setup: the error says what to run.
	out, errOut, err := run(nil, "inspect", "--providers", model)
	if err == nil || !strings.Contains(errOut, "run `shira-ort setup`") {
		t.Fatalf("inspect --providers before setup: %v\n%s%s", err, out, errOut)
	}

	wantLib, err := install.CachePath(filepath.Join(home, ".cache"), "", runtime.GOOS, runtime.GOARCH)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out, errOut, err = run([]string{install.RegistryEnv + "=" + registry}, "setup")
	if err != nil {
		t.Fatalf("shira-ort setup: %v\n%s%s", err, out, errOut)
	}
	t.Logf("setup took %v:\n%s%s", time.Since(start).Round(time.Millisecond), errOut, out)
	if !strings.HasPrefix(out, "fetched: "+wantLib+" ") || !strings.Contains(out, "\nexport "+ort.LibraryEnv+"="+wantLib+"\n") {
		t.Fatalf("setup output does not name %s as fetched:\n%s", wantLib, out)
	}
	data, err := os.ReadFile(wantLib)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < 1<<20 || !bytes.HasPrefix(data, []byte("\x7fELF")) {
		t.Fatalf("%s: %d bytes, not a shared library", wantLib, len(data))
	}
	if st, _ := os.Stat(wantLib); st.Mode().Perm() != createMode(t) {
		t.Errorf("%s: mode %v, want %v (what os.Create gives under this umask)", wantLib, st.Mode(), createMode(t))
	}

	// Second run: nothing downloaded, so an unreachable registry is fine.
	out, errOut, err = run([]string{install.RegistryEnv + "=http://127.0.0.1:1"}, "setup")
	if err != nil || !strings.HasPrefix(out, "cached: "+wantLib+" ") || errOut != "" {
		t.Fatalf("second setup: %v\n%s%s", err, out, errOut)
	}

	// The library loads, found in the cache without configuration.
	out, errOut, err = run(nil, "inspect", "--providers", model)
	if err != nil || !strings.Contains(out, "ONNX Runtime "+install.DefaultVersion+", providers in this build:") || !strings.Contains(out, "CPUExecutionProvider") {
		t.Fatalf("inspect --providers after setup: %v\n%s%s", err, out, errOut)
	}
	if entries, _ := os.ReadDir(work); len(entries) != 1 {
		t.Errorf("the working directory got files: %v", entries)
	}
}

// createMode is the permission os.Create gives a new file: 0666 less the
// umask.
func createMode(t *testing.T) os.FileMode {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "probe"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}
