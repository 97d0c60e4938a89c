package ortshim

/*
#include <stdlib.h>
#include "api_index.h"
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"sort"
	"unsafe"
)

// SessionOptions is an OrtSessionOptions: how a session is created. It is
// not safe for concurrent use; Release it once the sessions created with
// it exist (ORT copies what it needs, except AddInitializer's values).
type SessionOptions struct{ p *C.OrtSessionOptions }

// NewSessionOptions calls OrtApi::CreateSessionOptions: ORT's defaults.
func NewSessionOptions() (*SessionOptions, error) {
	if !initialized() {
		return nil, ErrNotInitialized
	}
	o := &SessionOptions{}
	if err := statusErr("CreateSessionOptions", C.shim_create_session_options(&o.p)); err != nil {
		return nil, err
	}
	return o, nil
}

// Release releases the options. It is a no-op on nil and on released
// options.
func (o *SessionOptions) Release() {
	if o == nil || o.p == nil {
		return
	}
	C.shim_release_session_options(o.p)
	o.p = nil
}

// ptr returns the OrtSessionOptions*, or an error for nil or released
// options.
func (o *SessionOptions) ptr() (*C.OrtSessionOptions, error) {
	if o == nil || o.p == nil {
		return nil, errReleased("SessionOptions")
	}
	return o.p, nil
}

// SetIntraOpThreads calls OrtApi::SetIntraOpNumThreads; 0 keeps ORT's
// default.
func (o *SessionOptions) SetIntraOpThreads(n int) error {
	p, err := o.ptr()
	if err != nil {
		return err
	}
	if n < 0 {
		return fmt.Errorf("ortshim: SetIntraOpNumThreads: negative thread count %d", n)
	}
	return statusErr("SetIntraOpNumThreads", C.shim_set_intra_op_threads(p, C.int(n)))
}

// SetInterOpThreads calls OrtApi::SetInterOpNumThreads; 0 keeps ORT's
// default.
func (o *SessionOptions) SetInterOpThreads(n int) error {
	p, err := o.ptr()
	if err != nil {
		return err
	}
	if n < 0 {
		return fmt.Errorf("ortshim: SetInterOpNumThreads: negative thread count %d", n)
	}
	return statusErr("SetInterOpNumThreads", C.shim_set_inter_op_threads(p, C.int(n)))
}

// OptimizationLevel is ORT's GraphOptimizationLevel.
type OptimizationLevel int

// ORT's graph optimization levels (values from the header, api_index.h).
const (
	OptimizeDisableAll OptimizationLevel = C.SHIM_ORT_DISABLE_ALL
	OptimizeBasic      OptimizationLevel = C.SHIM_ORT_ENABLE_BASIC
	OptimizeExtended   OptimizationLevel = C.SHIM_ORT_ENABLE_EXTENDED
	OptimizeAll        OptimizationLevel = C.SHIM_ORT_ENABLE_ALL
)

// SetOptimizationLevel calls OrtApi::SetSessionGraphOptimizationLevel.
func (o *SessionOptions) SetOptimizationLevel(level OptimizationLevel) error {
	p, err := o.ptr()
	if err != nil {
		return err
	}
	return statusErr("SetSessionGraphOptimizationLevel", C.shim_set_graph_optimization_level(p, C.int(level)))
}

// EnableProfiling calls OrtApi::EnableProfiling: sessions created with o
// write a JSON profile to a file named after prefix (see
// Session.EndProfiling).
func (o *SessionOptions) EnableProfiling(prefix string) error {
	p, err := o.ptr()
	if err != nil {
		return err
	}
	cp := C.CString(prefix)
	defer C.free(unsafe.Pointer(cp))
	return statusErr("EnableProfiling", C.shim_enable_profiling(p, cp))
}

// AddConfigEntry calls OrtApi::AddSessionConfigEntry (a later value for
// the same key replaces the earlier one).
func (o *SessionOptions) AddConfigEntry(key, value string) error {
	p, err := o.ptr()
	if err != nil {
		return err
	}
	ckey, cval := C.CString(key), C.CString(value)
	defer C.free(unsafe.Pointer(ckey))
	defer C.free(unsafe.Pointer(cval))
	return statusErr("AddSessionConfigEntry "+key, C.shim_add_session_config_entry(p, ckey, cval))
}

// HasConfigEntry calls OrtApi::HasSessionConfigEntry.
func (o *SessionOptions) HasConfigEntry(key string) (bool, error) {
	p, err := o.ptr()
	if err != nil {
		return false, err
	}
	ckey := C.CString(key)
	defer C.free(unsafe.Pointer(ckey))
	var out C.int
	err = statusErr("HasSessionConfigEntry", C.shim_has_session_config_entry(p, ckey, &out))
	return out != 0, err
}

// AppendExecutionProvider calls OrtApi::SessionOptionsAppendExecutionProvider
// with the provider's registration name ("XNNPACK", "QNN", "CoreML", ...)
// and its options, passed in key order.
func (o *SessionOptions) AppendExecutionProvider(name string, options map[string]string) error {
	p, err := o.ptr()
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(options))
	for k := range options {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	values := make([]string, len(keys))
	for i, k := range keys {
		values[i] = options[k]
	}
	ck, cv := NewNames(keys), NewNames(values)
	defer ck.Free()
	defer cv.Free()
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	return statusErr("SessionOptionsAppendExecutionProvider "+name,
		C.shim_append_execution_provider(p, cname, (**C.char)(unsafe.Pointer(ck.arr)), (**C.char)(unsafe.Pointer(cv.arr)), C.size_t(len(keys))))
}

// AddInitializer calls OrtApi::AddInitializer: sessions created with o read
// the initializer name from value (a tensor over caller-owned memory)
// instead of the model's data. value and its memory must outlive every
// session created with o.
func (o *SessionOptions) AddInitializer(name string, value *Value) error {
	p, err := o.ptr()
	if err != nil {
		return err
	}
	v, err := value.ptr()
	if err != nil {
		return fmt.Errorf("ortshim: AddInitializer %s: %w", name, err)
	}
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	return statusErr("AddInitializer "+name, C.shim_add_initializer(p, cname, v))
}

// AddExternalInitializers calls OrtApi::AddExternalInitializers: sessions
// created with o replace each initializer names[i], which must have
// external data in the model, with a copy of values[i] made before any
// graph optimization, so constant folding, layout transforms and
// prepacking all see these bytes. The values may be released once the
// session exists.
func (o *SessionOptions) AddExternalInitializers(names []string, values []*Value) error {
	p, err := o.ptr()
	if err != nil {
		return err
	}
	if len(names) != len(values) {
		return fmt.Errorf("ortshim: AddExternalInitializers: %d names for %d values", len(names), len(values))
	}
	if len(names) == 0 {
		return nil
	}
	vs := make([]*C.OrtValue, len(values))
	for i, v := range values {
		if vs[i], err = v.ptr(); err != nil {
			return fmt.Errorf("ortshim: AddExternalInitializers %s: %w", names[i], err)
		}
	}
	cn := NewNames(names)
	defer cn.Free()
	return statusErr("AddExternalInitializers", C.shim_add_external_initializers(p,
		(**C.char)(unsafe.Pointer(cn.arr)), &vs[0], C.size_t(len(vs))))
}
