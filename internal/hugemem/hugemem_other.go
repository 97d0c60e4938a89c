//go:build !linux

package hugemem

// Alloc returns n zeroed bytes and the function that frees them (a no-op
// here: on systems other than Linux the bytes are an ordinary Go slice,
// aligned to 64 bytes, and the garbage collector frees them).
func Alloc(n int) (b []byte, free func()) { return heap(n) }
