package ortshim

/*
#cgo LDFLAGS: -ldl
#include <stdlib.h>
#include "api_index.h"
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	onnxruntime "github.com/yalue/onnxruntime_go"
)

// APIVersion is the ORT C API version the shim asks for: ORT_API_VERSION
// of the header api_index.h was generated from (the one inside the
// onnxruntime_go module go.mod selects). Its slot numbers are valid for any
// library that provides this version.
const APIVersion = C.SHIM_ORT_API_VERSION

// HeaderModule is the onnxruntime_go module version whose ORT header
// api_index.h was generated from.
const HeaderModule = C.SHIM_ONNXRUNTIME_GO_VERSION

// ErrNotInitialized is returned by every call made before Init succeeded.
var ErrNotInitialized = errors.New("ortshim: not initialized (call Init after onnxruntime_go.InitializeEnvironment)")

var (
	initMu sync.Mutex
	ready  atomic.Bool
)

// Init attaches the shim to the ONNX Runtime library at path, which
// onnxruntime_go must already have loaded, and to the environment it
// created (InitializeEnvironment): the library is found among the loaded
// objects (dlopen with RTLD_NOLOAD) and asked for the C API version of
// api_index.h (APIVersion), which fails on an older library; then
// OrtApi::CreateEnv returns ORT's process-wide environment, the one
// onnxruntime_go created, with its logging level and threading unchanged
// (ORT ignores CreateEnv's arguments while an environment exists), and
// counts a reference the shim holds until the process exits; Init fails
// unless a second CreateEnv returns the same environment (EnvShared). Init
// is idempotent and safe for concurrent use.
func Init(path string) error {
	initMu.Lock()
	defer initMu.Unlock()
	if ready.Load() {
		return nil
	}
	// The environment must exist before the shim takes its reference, so
	// that the application's settings (onnxruntime_go's EnvironmentOption)
	// are the ones in force.
	if !onnxruntime.IsInitialized() {
		return fmt.Errorf("ortshim: onnxruntime_go is not initialized")
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	if msg := C.shim_init(cpath, C.uint32_t(APIVersion)); msg != nil {
		defer C.free(unsafe.Pointer(msg))
		return fmt.Errorf("ortshim: %s", C.GoString(msg))
	}
	ready.Store(true)
	return nil
}

// EnvShared reports whether OrtApi::CreateEnv returns the environment the
// shim holds (it calls CreateEnv once more and releases that reference).
// Init checks it; false before Init.
func EnvShared() bool {
	if !initialized() {
		return false
	}
	return C.shim_env_check() == 1
}

func initialized() bool { return ready.Load() }

// errReleased is returned by a method called on a nil or released handle.
func errReleased(what string) error { return fmt.Errorf("ortshim: %s is nil or released", what) }

// statusErr converts and releases an OrtStatus; nil means success.
func statusErr(op string, st *C.OrtStatus) error {
	if st == nil {
		return nil
	}
	msg := strings.TrimSpace(C.GoString(C.shim_status_message(st)))
	C.shim_release_status(st)
	return fmt.Errorf("ortshim: %s: %s", op, msg)
}
