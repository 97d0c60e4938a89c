package ort

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	onnxruntime "github.com/yalue/onnxruntime_go"

	"github.com/shira-ort/shira-ort/internal/ortshim"
)

// LibraryVersion is the ONNX Runtime release scripts/setup-ort.sh installs
// by default: the one whose C API header onnxruntime_go v1.27.0 uses.
const LibraryVersion = "1.24.1"

// LibraryEnv names the environment variable that overrides the library
// location (the same variable onnxruntime_go's documentation uses).
const LibraryEnv = "ONNXRUNTIME_SHARED_LIBRARY_PATH"

// SetupCommand is the command that installs the library where LibraryPath
// looks for it.
const SetupCommand = "bash scripts/setup-ort.sh"

// ErrLibraryNotFound is wrapped by LibraryPath's (and Init's) error when
// the ONNX Runtime shared library is not installed.
var ErrLibraryNotFound = errors.New("ONNX Runtime shared library not found")

// CachedLibraryPath returns where scripts/setup-ort.sh puts the library:
// $XDG_CACHE_HOME (or ~/.cache)/shira-ort/onnxruntime/<LibraryVersion>/linux-<x64|arm64>/libonnxruntime.so.1.
func CachedLibraryPath() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("ort: locating the user cache directory: %w", err)
	}
	arch := runtime.GOARCH
	switch arch {
	case "amd64":
		arch = "x64"
	case "arm64":
	default:
		return "", fmt.Errorf("ort: no prebuilt ONNX Runtime for %s/%s; set %s", runtime.GOOS, arch, LibraryEnv)
	}
	return filepath.Join(cache, "shira-ort", "onnxruntime", LibraryVersion, runtime.GOOS+"-"+arch, "libonnxruntime.so.1"), nil
}

// LibraryPath returns the ONNX Runtime shared library to load: the file
// named by ONNXRUNTIME_SHARED_LIBRARY_PATH when set, otherwise the cache
// location of CachedLibraryPath. When the file is missing, the error (which
// wraps ErrLibraryNotFound) says where it looked and which command fixes it.
func LibraryPath() (string, error) {
	if p := os.Getenv(LibraryEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("ort: %w: %s=%s does not exist; fix: run `%s` (or `make setup`) from the repository root and export the path it prints, or unset %s",
				ErrLibraryNotFound, LibraryEnv, p, SetupCommand, LibraryEnv)
		}
		return p, nil
	}
	p, err := CachedLibraryPath()
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("ort: %w: %s is not set and %s does not exist; fix: run `%s` (or `make setup`) from the repository root",
			ErrLibraryNotFound, LibraryEnv, p, SetupCommand)
	}
	return p, nil
}

var (
	initMu   sync.Mutex
	initDone bool
)

// Init loads ONNX Runtime (LibraryPath) and creates its environment through
// onnxruntime_go, then attaches internal/ortshim, which makes every session,
// option set and tensor of this package in that environment (ORT has one
// per process). It is idempotent and safe for concurrent use; after a
// failure a later call tries again. If the application initialized
// onnxruntime_go itself, Init reuses that library and environment, with the
// application's environment settings.
func Init() error {
	initMu.Lock()
	defer initMu.Unlock()
	if initDone {
		return nil
	}
	path, pathErr := LibraryPath()
	if !onnxruntime.IsInitialized() {
		if pathErr != nil {
			return pathErr
		}
		onnxruntime.SetSharedLibraryPath(path)
		if err := onnxruntime.InitializeEnvironment(); err != nil {
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

// Version returns the version of the loaded ONNX Runtime library, or ""
// before Init.
func Version() string {
	if !onnxruntime.IsInitialized() {
		return ""
	}
	return onnxruntime.GetVersion()
}
