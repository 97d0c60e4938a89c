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

// APIVersion is the ORT C API version the shim asks for: the one
// onnxruntime_go was built against (ORT_API_VERSION of its header).
const APIVersion = C.SHIM_ORT_API_VERSION

// ErrNotInitialized is returned by every call made before Init succeeded.
var ErrNotInitialized = errors.New("ortshim: not initialized (call Init after onnxruntime_go.InitializeEnvironment)")

var (
	initMu sync.Mutex
	ready  atomic.Bool
)

// Init attaches the shim to the ONNX Runtime library at path, which
// onnxruntime_go must already have loaded (InitializeEnvironment). It checks
// the layout mirrors first. Init is idempotent and safe for concurrent use.
func Init(path string) error {
	initMu.Lock()
	defer initMu.Unlock()
	if ready.Load() {
		return nil
	}
	if !onnxruntime.IsInitialized() {
		return fmt.Errorf("ortshim: onnxruntime_go is not initialized")
	}
	if err := checkMirrors(); err != nil {
		return err
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

// Version returns the version string of the attached library, or "" before
// Init.
func Version() string {
	if !initialized() {
		return ""
	}
	return C.GoString(C.shim_version())
}

func initialized() bool { return ready.Load() }

// statusErr converts and releases an OrtStatus; nil means success.
func statusErr(op string, st *C.OrtStatus) error {
	if st == nil {
		return nil
	}
	msg := strings.TrimSpace(C.GoString(C.shim_status_message(st)))
	C.shim_release_status(st)
	return fmt.Errorf("ortshim: %s: %s", op, msg)
}
