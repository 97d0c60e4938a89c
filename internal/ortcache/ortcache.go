// Package ortcache is where the ONNX Runtime shared library lives in the
// user cache: the layout shared by ort (which loads the library from
// there) and ort/install (which puts it there). It is separate from
// ort/install so that loading the library does not link the downloader
// (net/http, crypto/tls) into every program using ort.
package ortcache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// DefaultVersion is the onnxruntime-node (and ONNX Runtime) release
// installed by default: the one whose C API header
// github.com/yalue/onnxruntime_go v1.27.0 was built against.
const DefaultVersion = "1.24.1"

// Package is the npm package the library is taken from.
const Package = "onnxruntime-node"

// LibraryName is the file name of the installed library (its soname).
const LibraryName = "libonnxruntime.so.1"

// ErrUnsupported is wrapped by Path's error for a platform the npm package
// has no prebuilt library for.
var ErrUnsupported = errors.New("install: unsupported platform")

// Path returns <cacheDir>/shira-ort/onnxruntime/<version>/<goos>-<x64|arm64>/libonnxruntime.so.1;
// cacheDir "" means os.UserCacheDir() and version "" means DefaultVersion.
func Path(cacheDir, version, goos, goarch string) (string, error) {
	if version == "" {
		version = DefaultVersion
	}
	if err := CheckVersion(version); err != nil {
		return "", err
	}
	arch, err := NPMArch(goos, goarch)
	if err != nil {
		return "", err
	}
	if cacheDir == "" {
		if cacheDir, err = os.UserCacheDir(); err != nil {
			return "", fmt.Errorf("install: locating the user cache directory (set XDG_CACHE_HOME or HOME, or give a cache directory): %w", err)
		}
	}
	return filepath.Join(cacheDir, "shira-ort", "onnxruntime", version, goos+"-"+arch, LibraryName), nil
}

// NPMArch maps goarch (amd64 or arm64; x64, x86_64 and aarch64 are
// accepted too) to the architecture directory of the npm package, and
// refuses any platform but linux/amd64 and linux/arm64.
func NPMArch(goos, goarch string) (string, error) {
	arch := ""
	switch goarch {
	case "amd64", "x64", "x86_64":
		arch = "x64"
	case "arm64", "aarch64":
		arch = "arm64"
	}
	if goos != "linux" || arch == "" {
		return "", fmt.Errorf("%w: %s has no prebuilt ONNX Runtime for %s/%s (only linux/amd64 and linux/arm64); build or download libonnxruntime yourself and point ONNXRUNTIME_SHARED_LIBRARY_PATH at it",
			ErrUnsupported, Package, goos, goarch)
	}
	return arch, nil
}

// CheckVersion refuses versions that are not plain release names (they
// become a directory name and part of a URL).
func CheckVersion(v string) error {
	ok := v != "" && v[0] >= '0' && v[0] <= '9' && len(v) <= 64
	for _, c := range v {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '.' || c == '-' || c == '+') {
			ok = false
		}
	}
	if !ok || strings.Contains(v, "..") {
		return fmt.Errorf("install: invalid version %q (want a release such as %s)", v, DefaultVersion)
	}
	return nil
}
