package ortshim

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"errors"
	"unsafe"
)

// Session is an OrtSession, created in ORT's process-wide environment (see
// Init). Run, Count and Describe are safe for concurrent use, as ORT's are;
// Release must not overlap any other call.
type Session struct{ p *C.OrtSession }

// NewSession calls OrtApi::CreateSession on the model file at path (its
// external data is resolved relative to the file). options may be nil for
// ORT's defaults.
func NewSession(path string, options *SessionOptions) (*Session, error) {
	if !initialized() {
		return nil, ErrNotInitialized
	}
	o, err := optionsPtr(options)
	if err != nil {
		return nil, err
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	s := &Session{}
	if err := statusErr("CreateSession", C.shim_create_session(cpath, o, &s.p)); err != nil {
		return nil, err
	}
	return s, nil
}

// NewSessionFromBytes calls OrtApi::CreateSessionFromArray on a serialized
// model (ORT does not keep model after it returns). External data is
// resolved relative to the working directory unless options set
// "session.model_external_initializers_file_folder_path". options may be
// nil for ORT's defaults.
func NewSessionFromBytes(model []byte, options *SessionOptions) (*Session, error) {
	if !initialized() {
		return nil, ErrNotInitialized
	}
	if len(model) == 0 {
		return nil, errors.New("ortshim: CreateSessionFromArray: empty model")
	}
	o, err := optionsPtr(options)
	if err != nil {
		return nil, err
	}
	s := &Session{}
	st := C.shim_create_session_from_array(unsafe.Pointer(unsafe.SliceData(model)), C.size_t(len(model)), o, &s.p)
	if err := statusErr("CreateSessionFromArray", st); err != nil {
		return nil, err
	}
	return s, nil
}

// optionsPtr is nil for nil options (ORT's defaults) and an error for
// released ones.
func optionsPtr(o *SessionOptions) (*C.OrtSessionOptions, error) {
	if o == nil {
		return nil, nil
	}
	return o.ptr()
}

// Release releases the session; no call on it may be running. It is a
// no-op on nil and on a released session.
func (s *Session) Release() {
	if s == nil || s.p == nil {
		return
	}
	C.shim_release_session(s.p)
	s.p = nil
}

func (s *Session) ptr() (*C.OrtSession, error) {
	if s == nil || s.p == nil {
		return nil, errReleased("Session")
	}
	return s.p, nil
}

// EndProfiling calls OrtApi::SessionEndProfiling on a session created with
// profiling enabled (SessionOptions.EnableProfiling) and returns the name
// of the JSON profile file ORT wrote.
func (s *Session) EndProfiling() (string, error) {
	p, err := s.ptr()
	if err != nil {
		return "", err
	}
	var out *C.char
	if err := statusErr("SessionEndProfiling", C.shim_end_profiling(p, &out)); err != nil {
		return "", err
	}
	defer C.shim_free_string(out)
	return C.GoString(out), nil
}
