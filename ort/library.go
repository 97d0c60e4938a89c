package ort

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"strings"
	"sync"

	onnxruntime "github.com/yalue/onnxruntime_go"

	"github.com/shira-ort/shira-ort/internal/ortcache"
	"github.com/shira-ort/shira-ort/internal/ortshim"
)

// LibraryVersion is the ONNX Runtime release install.Library (and
// `shira-ort setup`) installs by default, install.DefaultVersion: the one
// whose C API header onnxruntime_go v1.27.0 uses.
const LibraryVersion = ortcache.DefaultVersion

// LibraryEnv names the environment variable that overrides the library
// location (the same variable onnxruntime_go's documentation uses).
const LibraryEnv = "ONNXRUNTIME_SHARED_LIBRARY_PATH"

// ErrLibraryNotFound is wrapped by LibraryPath's (and Init's) error when
// the ONNX Runtime shared library is not installed.
var ErrLibraryNotFound = errors.New("ort: ONNX Runtime shared library not found")

// howToInstall ends every ErrLibraryNotFound message.
const howToInstall = "install it with `shira-ort setup` (go install github.com/shira-ort/shira-ort/cmd/shira-ort@latest) " +
	"or install.Library from Go, or point " + LibraryEnv + " or ort.WithLibraryPath at a libonnxruntime.so you have"

// CachedLibraryPath returns where install.Library (`shira-ort setup`) puts
// the library for this machine:
// $XDG_CACHE_HOME (or ~/.cache)/shira-ort/onnxruntime/<LibraryVersion>/linux-<x64|arm64>/libonnxruntime.so.1.
func CachedLibraryPath() (string, error) {
	p, err := ortcache.Path("", LibraryVersion, runtime.GOOS, runtime.GOARCH) // install.CachePath
	if err != nil {
		return "", fmt.Errorf("ort: %w; set %s or pass ort.WithLibraryPath", err, LibraryEnv)
	}
	return p, nil
}

// LibraryPath returns the ONNX Runtime shared library Init loads when not
// given WithLibraryPath: the file named by ONNXRUNTIME_SHARED_LIBRARY_PATH
// when set, otherwise the cache location of CachedLibraryPath. When the
// file is missing, the error (which wraps ErrLibraryNotFound) says where it
// looked and how to install the library.
func LibraryPath() (string, error) {
	return libraryPath("")
}

// libraryPath resolves the library to load: given (from WithLibraryPath)
// when not empty, then the environment, then the cache.
func libraryPath(given string) (string, error) {
	if given != "" {
		if _, err := os.Stat(given); err != nil {
			return "", fmt.Errorf("%w: %s (given by ort.WithLibraryPath) %s; %s", ErrLibraryNotFound, given, statProblem(err), howToInstall)
		}
		return given, nil
	}
	if p := os.Getenv(LibraryEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%w: %s=%s %s; %s (an unset %s means the cached library)",
				ErrLibraryNotFound, LibraryEnv, p, statProblem(err), howToInstall, LibraryEnv)
		}
		return p, nil
	}
	p, err := CachedLibraryPath()
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%w: %s is not set and %s %s; %s",
			ErrLibraryNotFound, LibraryEnv, p, statProblem(err), howToInstall)
	}
	return p, nil
}

// statProblem says why os.Stat failed: "does not exist", or the error.
func statProblem(err error) string {
	if errors.Is(err, fs.ErrNotExist) {
		return "does not exist"
	}
	return "cannot be read (" + err.Error() + ")"
}

// InitOption configures Init.
type InitOption func(*initConfig)

type initConfig struct {
	libraryPath string
}

// WithLibraryPath makes Init load the ONNX Runtime shared library at path
// (for instance install.Library's Result.Path) instead of the one named by
// ONNXRUNTIME_SHARED_LIBRARY_PATH or the cached one. An empty path changes
// nothing.
func WithLibraryPath(path string) InitOption {
	return func(c *initConfig) { c.libraryPath = path }
}

var (
	initMu   sync.Mutex
	initDone bool
)

// Init loads ONNX Runtime, creates its environment through onnxruntime_go
// and attaches internal/ortshim, which makes every session, option set and
// tensor of this package in that environment (ORT has one per process). The library
// is the one given by WithLibraryPath, else LibraryPath's (the
// ONNXRUNTIME_SHARED_LIBRARY_PATH environment variable, then the cache
// `shira-ort setup` fills). It is idempotent and safe for concurrent use;
// after a failure a later call tries again. The library is loaded once per
// process: after a successful Init, WithLibraryPath naming another file is
// an error. If the application initialized onnxruntime_go itself, Init
// reuses that environment.
func Init(opts ...InitOption) error {
	var c initConfig
	for _, o := range opts {
		o(&c)
	}
	initMu.Lock()
	defer initMu.Unlock()
	if initDone {
		if c.libraryPath != "" && !sameFile(c.libraryPath, loadedPath) {
			loaded := loadedPath
			if loaded == "" {
				loaded = "the library the application loaded"
			}
			return fmt.Errorf("ort: cannot load %s: ONNX Runtime is already loaded from %s, and a process can load it only once", c.libraryPath, loaded)
		}
		return nil
	}
	path, pathErr := libraryPath(c.libraryPath)
	if !onnxruntime.IsInitialized() {
		if pathErr != nil {
			return pathErr
		}
		onnxruntime.SetSharedLibraryPath(path)
		if err := onnxruntime.InitializeEnvironment(); err != nil {
			if strings.Contains(err.Error(), "OrtGetApiBase") {
				return fmt.Errorf("ort: %s is not an ONNX Runtime shared library (it has no OrtGetApiBase function); give the path of a libonnxruntime.so (`shira-ort setup` installs one): %w", path, err)
			}
			return fmt.Errorf("ort: loading %s: %w", path, err)
		}
	}
	if err := ortshim.Init(path); err != nil {
		// onnxruntime_go may have been initialized elsewhere from another
		// path; the library's soname finds it among the loaded objects.
		if err2 := ortshim.Init("libonnxruntime.so.1"); err2 != nil {
			return fmt.Errorf("ort: %w", err)
		}
	}
	initDone = true
	loadedPath = path
	return nil
}

// loadedPath is the library Init loaded ("" if the application
// initialized onnxruntime_go itself without a path shira-ort knows).
var loadedPath string

// sameFile reports whether paths a and b name the same file.
func sameFile(a, b string) bool {
	if a == b {
		return true
	}
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}

// Version returns the version of the loaded ONNX Runtime library, or ""
// before Init.
func Version() string {
	if !onnxruntime.IsInitialized() {
		return ""
	}
	return onnxruntime.GetVersion()
}
