package hugemem

import "unsafe"

// heap is the fallback of Alloc: n bytes of Go memory, aligned to 64
// bytes (a cache line), and a no-op free.
func heap(n int) ([]byte, func()) {
	if n <= 0 {
		return nil, func() {}
	}
	buf := make([]byte, n+63)
	off := int(-uintptr(unsafe.Pointer(unsafe.SliceData(buf))) & 63)
	return buf[off : off+n : off+n], func() {}
}
