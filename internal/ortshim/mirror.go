package ortshim

import (
	"fmt"
	"runtime/debug"
	"unsafe"

	onnxruntime "github.com/yalue/onnxruntime_go"
)

// PinnedModuleVersion is the only github.com/yalue/onnxruntime_go version
// whose unexported struct layouts the mirrors below match.
const PinnedModuleVersion = "v1.27.0"

const modulePath = "github.com/yalue/onnxruntime_go"

// The mirrors copy the field layout of onnxruntime_go v1.27.0
// (onnxruntime_go.go): SessionOptions{o}, RunOptions{o},
// ValueInternalData{ortValue}, DynamicAdvancedSession{s *AdvancedSession}
// and AdvancedSession{ortSession, inputNames, outputNames, inputs, outputs}.
type (
	sessionOptionsMirror struct{ o unsafe.Pointer }
	runOptionsMirror     struct{ o unsafe.Pointer }
	valueInternalsMirror struct{ ortValue unsafe.Pointer }
	advancedMirror       struct {
		ortSession              unsafe.Pointer
		inputNames, outputNames []unsafe.Pointer
		inputs, outputs         []unsafe.Pointer
	}
	dynamicMirror struct{ s *advancedMirror }
)

// checkMirrors refuses a different onnxruntime_go version (when the build
// records one) and struct sizes that differ from the mirrors.
func checkMirrors() error {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path != modulePath {
				continue
			}
			if d.Replace == nil && d.Version != PinnedModuleVersion {
				return fmt.Errorf("ortshim: built with %s %s, but the layout mirrors are for %s; update internal/ortshim/mirror.go and re-run go generate",
					modulePath, d.Version, PinnedModuleVersion)
			}
		}
	}
	sizes := []struct {
		name      string
		got, want uintptr
	}{
		{"SessionOptions", unsafe.Sizeof(onnxruntime.SessionOptions{}), unsafe.Sizeof(sessionOptionsMirror{})},
		{"RunOptions", unsafe.Sizeof(onnxruntime.RunOptions{}), unsafe.Sizeof(runOptionsMirror{})},
		{"ValueInternalData", unsafe.Sizeof(onnxruntime.ValueInternalData{}), unsafe.Sizeof(valueInternalsMirror{})},
		{"AdvancedSession", unsafe.Sizeof(onnxruntime.AdvancedSession{}), unsafe.Sizeof(advancedMirror{})},
		{"DynamicAdvancedSession", unsafe.Sizeof(onnxruntime.DynamicAdvancedSession{}), unsafe.Sizeof(dynamicMirror{})},
	}
	for _, s := range sizes {
		if s.got != s.want {
			return fmt.Errorf("ortshim: onnxruntime_go.%s is %d bytes, its mirror %d: layout changed", s.name, s.got, s.want)
		}
	}
	return nil
}

// SessionOptionsPtr returns the OrtSessionOptions* inside o.
func SessionOptionsPtr(o *onnxruntime.SessionOptions) unsafe.Pointer {
	if o == nil {
		return nil
	}
	return (*sessionOptionsMirror)(unsafe.Pointer(o)).o
}

// RunOptionsPtr returns the OrtRunOptions* inside o.
func RunOptionsPtr(o *onnxruntime.RunOptions) unsafe.Pointer {
	if o == nil {
		return nil
	}
	return (*runOptionsMirror)(unsafe.Pointer(o)).o
}

// ValuePtr returns the OrtValue* inside v.
func ValuePtr(v onnxruntime.Value) unsafe.Pointer {
	if v == nil {
		return nil
	}
	in := v.GetInternals()
	if in == nil {
		return nil
	}
	return (*valueInternalsMirror)(unsafe.Pointer(in)).ortValue
}

// SessionPtr returns the OrtSession* inside s.
func SessionPtr(s *onnxruntime.DynamicAdvancedSession) unsafe.Pointer {
	if s == nil {
		return nil
	}
	a := (*dynamicMirror)(unsafe.Pointer(s)).s
	if a == nil {
		return nil
	}
	return a.ortSession
}
