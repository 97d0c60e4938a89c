package ortshim

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"unsafe"
)

// RunOptions is an OrtRunOptions: per-Run settings (configuration entries,
// active LoRA adapters) and cancellation. Many Runs may use the same
// RunOptions at once; SetTerminate and UnsetTerminate are safe while they
// do. Configure it before the Runs start, and Release it after they end.
type RunOptions struct{ p *C.OrtRunOptions }

// NewRunOptions calls OrtApi::CreateRunOptions and adds the given run
// configuration entries (OrtApi::AddRunConfigEntry).
func NewRunOptions(config map[string]string) (*RunOptions, error) {
	if !initialized() {
		return nil, ErrNotInitialized
	}
	ro := &RunOptions{}
	if err := statusErr("CreateRunOptions", C.shim_create_run_options(&ro.p)); err != nil {
		return nil, err
	}
	for k, v := range config {
		if err := ro.AddConfigEntry(k, v); err != nil {
			ro.Release()
			return nil, err
		}
	}
	return ro, nil
}

// Release releases the run options; no Run may still use them. It is a
// no-op on nil and on released run options.
func (r *RunOptions) Release() {
	if r == nil || r.p == nil {
		return
	}
	C.shim_release_run_options(r.p)
	r.p = nil
}

func (r *RunOptions) ptr() (*C.OrtRunOptions, error) {
	if r == nil || r.p == nil {
		return nil, errReleased("RunOptions")
	}
	return r.p, nil
}

// AddConfigEntry calls OrtApi::AddRunConfigEntry.
func (r *RunOptions) AddConfigEntry(key, value string) error {
	p, err := r.ptr()
	if err != nil {
		return err
	}
	ckey, cval := C.CString(key), C.CString(value)
	defer C.free(unsafe.Pointer(ckey))
	defer C.free(unsafe.Pointer(cval))
	return statusErr("AddRunConfigEntry "+key, C.shim_add_run_config_entry(p, ckey, cval))
}

// SetTerminate makes every Run using r stop as soon as possible with an
// error (OrtApi::RunOptionsSetTerminate), including Runs that start later,
// until UnsetTerminate. It is safe to call while a Run is using r.
func (r *RunOptions) SetTerminate() error {
	p, err := r.ptr()
	if err != nil {
		return err
	}
	return statusErr("RunOptionsSetTerminate", C.shim_run_options_set_terminate(p))
}

// UnsetTerminate clears SetTerminate so r can serve new Runs
// (OrtApi::RunOptionsUnsetTerminate).
func (r *RunOptions) UnsetTerminate() error {
	p, err := r.ptr()
	if err != nil {
		return err
	}
	return statusErr("RunOptionsUnsetTerminate", C.shim_run_options_unset_terminate(p))
}

// AddActiveLoraAdapter calls OrtApi::RunOptionsAddActiveLoraAdapter: every
// Run with r feeds the adapter's parameters as the inputs of the same
// names. The adapter must outlive those Runs.
func (r *RunOptions) AddActiveLoraAdapter(a *LoraAdapter) error {
	p, err := r.ptr()
	if err != nil {
		return err
	}
	ap, err := a.ptr()
	if err != nil {
		return err
	}
	return statusErr("RunOptionsAddActiveLoraAdapter", C.shim_run_options_add_active_lora_adapter(p, ap))
}
