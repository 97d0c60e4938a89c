package ortshim

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// AddInitializer calls OrtApi::AddInitializer: the session created with
// options (an OrtSessionOptions*) will read the initializer name from value
// (an OrtValue* over caller-owned memory) instead of the model's data. value
// and its memory must outlive every session created with options.
func AddInitializer(options unsafe.Pointer, name string, value unsafe.Pointer) error {
	if !initialized() {
		return ErrNotInitialized
	}
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	return statusErr("AddInitializer "+name, C.shim_add_initializer((*C.OrtSessionOptions)(options), cname, (*C.OrtValue)(value)))
}

// HasSessionConfigEntry reports whether options (an OrtSessionOptions*)
// holds the session configuration key.
func HasSessionConfigEntry(options unsafe.Pointer, key string) (bool, error) {
	if !initialized() {
		return false, ErrNotInitialized
	}
	ckey := C.CString(key)
	defer C.free(unsafe.Pointer(ckey))
	var out C.int
	err := statusErr("HasSessionConfigEntry", C.shim_has_session_config_entry((*C.OrtSessionOptions)(options), ckey, &out))
	return out != 0, err
}

// NewRunOptions creates an OrtRunOptions* holding the given run
// configuration entries (OrtApi::AddRunConfigEntry). Release it with
// ReleaseRunOptions.
func NewRunOptions(config map[string]string) (unsafe.Pointer, error) {
	if !initialized() {
		return nil, ErrNotInitialized
	}
	var ro *C.OrtRunOptions
	if err := statusErr("CreateRunOptions", C.shim_create_run_options(&ro)); err != nil {
		return nil, err
	}
	for k, v := range config {
		if err := AddRunConfigEntry(unsafe.Pointer(ro), k, v); err != nil {
			C.shim_release_run_options(ro)
			return nil, err
		}
	}
	return unsafe.Pointer(ro), nil
}

// AddRunConfigEntry calls OrtApi::AddRunConfigEntry on runOptions (an
// OrtRunOptions*).
func AddRunConfigEntry(runOptions unsafe.Pointer, key, value string) error {
	if !initialized() {
		return ErrNotInitialized
	}
	ckey, cval := C.CString(key), C.CString(value)
	defer C.free(unsafe.Pointer(ckey))
	defer C.free(unsafe.Pointer(cval))
	return statusErr("AddRunConfigEntry "+key, C.shim_add_run_config_entry((*C.OrtRunOptions)(runOptions), ckey, cval))
}

// SetTerminate makes every Run using runOptions (an OrtRunOptions*) stop
// as soon as possible with an error (OrtApi::RunOptionsSetTerminate).
// It is safe to call while a Run is using runOptions.
func SetTerminate(runOptions unsafe.Pointer) error {
	if !initialized() {
		return ErrNotInitialized
	}
	return statusErr("RunOptionsSetTerminate", C.shim_run_options_set_terminate((*C.OrtRunOptions)(runOptions)))
}

// UnsetTerminate clears SetTerminate so runOptions can serve new Runs.
func UnsetTerminate(runOptions unsafe.Pointer) error {
	if !initialized() {
		return ErrNotInitialized
	}
	return statusErr("RunOptionsUnsetTerminate", C.shim_run_options_unset_terminate((*C.OrtRunOptions)(runOptions)))
}

// ReleaseRunOptions releases run options made by NewRunOptions; nil is a
// no-op.
func ReleaseRunOptions(runOptions unsafe.Pointer) {
	if runOptions != nil && initialized() {
		C.shim_release_run_options((*C.OrtRunOptions)(runOptions))
	}
}

// AddExternalInitializers calls OrtApi::AddExternalInitializers: the session
// created with options (an OrtSessionOptions*) replaces each initializer
// names[i], which must have external data in the model, with a copy of
// values[i] (an OrtValue*) made before any graph optimization, so constant
// folding, layout transforms and prepacking all see these bytes. The values
// may be released once the session exists.
func AddExternalInitializers(options unsafe.Pointer, names []string, values []unsafe.Pointer) error {
	if !initialized() {
		return ErrNotInitialized
	}
	if len(names) != len(values) {
		return fmt.Errorf("ortshim: AddExternalInitializers: %d names for %d values", len(names), len(values))
	}
	if len(names) == 0 {
		return nil
	}
	cn := NewNames(names)
	defer cn.Free()
	return statusErr("AddExternalInitializers", C.shim_add_external_initializers((*C.OrtSessionOptions)(options),
		(**C.char)(unsafe.Pointer(cn.arr)), (**C.OrtValue)(unsafe.Pointer(&values[0])), C.size_t(len(values))))
}

// TrimHeap returns free heap memory to the operating system (glibc
// malloc_trim), e.g. after a large ORT session was released; a no-op
// elsewhere.
func TrimHeap() { C.shim_trim_heap() }

// FixMmapThreshold makes glibc's malloc serve every allocation of at least
// bytes with its own mmap, returned to the operating system when freed,
// by fixing M_MMAP_THRESHOLD. By default glibc raises that threshold each
// time such a block is freed (up to 32 MiB), after which weight-sized
// buffers come from the heap and stay in the process's memory when a
// session is released. It reports whether the setting was applied (false
// without glibc). It affects the whole process.
func FixMmapThreshold(bytes int) bool { return C.shim_fix_mmap_threshold(C.size_t(bytes)) == 1 }
