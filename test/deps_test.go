package test

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// allowedModules lists, for each library package and the CLI, the only
// modules outside the standard library and this module it may depend on
// (directly or not). A package that gains any other dependency fails the
// test: the core library stays small, and installing the CLI compiles
// only what it runs (no plotting, image or PDF packages; those serve
// cmd/shira-bench).
var allowedModules = map[string][]string{
	"./tensor":      {"github.com/x448/float16"},
	"./adapter":     {"github.com/x448/float16", "github.com/google/flatbuffers", "golang.org/x/sys"},
	"./patch":       {"github.com/x448/float16", "github.com/google/flatbuffers", "golang.org/x/sys"},
	"./export":      {"github.com/x448/float16", "github.com/google/flatbuffers", "golang.org/x/sys", "google.golang.org/protobuf"},
	"./ort/install": {}, // standard library only: `shira-ort setup` needs no third-party code
	"./ort":         {"github.com/x448/float16", "github.com/google/flatbuffers", "golang.org/x/sys", "google.golang.org/protobuf", "github.com/yalue/onnxruntime_go"},
	"./peft":        {"github.com/x448/float16", "github.com/google/flatbuffers", "golang.org/x/sys", "google.golang.org/protobuf", "github.com/nlpodyssey/safetensors"},
	"./lora":        {"github.com/x448/float16", "github.com/google/flatbuffers", "golang.org/x/sys", "google.golang.org/protobuf", "github.com/nlpodyssey/safetensors", "github.com/yalue/onnxruntime_go"},
	"./sched":       {"github.com/x448/float16"},
	"./registry":    {"github.com/x448/float16", "github.com/google/flatbuffers", "golang.org/x/sys", "google.golang.org/protobuf", "github.com/nlpodyssey/safetensors", "github.com/yalue/onnxruntime_go"},
	// serve: the Prometheus client and what it brings (its text format, process metrics).
	"./serve":         append([]string{"github.com/x448/float16", "github.com/google/flatbuffers", "golang.org/x/sys", "google.golang.org/protobuf", "github.com/nlpodyssey/safetensors", "github.com/yalue/onnxruntime_go"}, prometheusModules...),
	"./cmd/shira-ort": append([]string{"github.com/x448/float16", "github.com/google/flatbuffers", "golang.org/x/sys", "google.golang.org/protobuf", "github.com/nlpodyssey/safetensors", "github.com/yalue/onnxruntime_go", "github.com/spf13/cobra", "github.com/spf13/pflag"}, prometheusModules...),
}

// prometheusModules are github.com/prometheus/client_golang and its
// dependencies, which `serve` (and so the CLI) links for /metrics.
var prometheusModules = []string{"github.com/prometheus/client_golang", "github.com/prometheus/client_model", "github.com/prometheus/common",
	"github.com/prometheus/procfs", "github.com/beorn7/perks", "github.com/cespare/xxhash/v2", "github.com/munnerz/goautoneg", "go.yaml.in/yaml/v2"}

// TestDependencies runs `go list -deps` on each package of allowedModules
// and fails on any module not listed for it.
func TestDependencies(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatalf("the go command is needed to list dependencies: %v", err)
	}
	for pkg, allowed := range allowedModules {
		cmd := exec.Command("go", "list", "-deps", "-json=ImportPath,Module,Standard", pkg)
		cmd.Dir = repoPath()
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		type listed struct {
			ImportPath string
			Standard   bool
			Module     *struct{ Path string }
		}
		dec := json.NewDecoder(strings.NewReader(string(out)))
		seen := 0
		for {
			var p listed
			if err := dec.Decode(&p); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("go list %s: %v", pkg, err)
			}
			seen++
			if p.Standard || p.Module == nil || p.Module.Path == "github.com/shira-ort/shira-ort" {
				continue
			}
			if !slices.Contains(allowed, p.Module.Path) {
				t.Errorf("%s depends on %s (module %s), which is not in its allowed list; keep heavy dependencies out of the library and the CLI, or extend allowedModules with a reason",
					pkg, p.ImportPath, p.Module.Path)
			}
		}
		if seen == 0 {
			t.Errorf("go list %s listed nothing", pkg)
		}
	}
}

// TestOrtDoesNotLinkDownloader checks that loading ONNX Runtime (package
// ort) does not link ort/install's downloader: net/http and crypto/tls
// would add ~2 MB to every program using ort (mobile ones included). ort
// shares only the cache layout, through internal/ortcache.
func TestOrtDoesNotLinkDownloader(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "./ort")
	cmd.Dir = repoPath()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list ./ort: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if p == "net/http" || p == "github.com/shira-ort/shira-ort/ort/install" {
			t.Errorf("./ort depends on %s; keep the downloader (ort/install) out of ort", p)
		}
	}
}

// pureGo lists the library packages that must build without cgo (for
// embedders who cannot use a C compiler); ort and lora need cgo.
var pureGo = []string{"./tensor", "./adapter", "./patch", "./export", "./peft", "./ort/install", "./internal/mlaspack", "./sched"}

// TestPureGoPackages builds pureGo with CGO_ENABLED=0.
func TestPureGoPackages(t *testing.T) {
	cmd := exec.Command("go", append([]string{"build", "-o", os.DevNull}, pureGo...)...)
	cmd.Dir = repoPath()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build %v: %v\n%s", pureGo, err, out)
	}
}
