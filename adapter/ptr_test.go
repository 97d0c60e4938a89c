package adapter

import "unsafe"

func ptrOf[T any](p *T) uintptr { return uintptr(unsafe.Pointer(p)) }

func inside(b []byte, p uintptr) bool {
	s := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return p >= s && p < s+uintptr(len(b))
}
