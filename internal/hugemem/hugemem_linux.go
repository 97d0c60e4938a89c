package hugemem

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Alloc returns n zeroed bytes and the function that frees them (call it
// once, when nothing refers to the bytes any more; it is never nil).
//
// On Linux the bytes are an anonymous private mapping outside the Go
// heap, starting on a PageSize boundary and rounded up to a whole number
// of huge pages, advised MADV_HUGEPAGE so that the kernel backs it with
// huge pages as it is first written (if transparent huge pages are
// enabled; the advice failing is not an error). Being outside the Go
// heap, the memory may be handed to C (ONNX Runtime) without pinning. If
// the mapping itself fails, Alloc falls back to a Go slice (aligned to 64
// bytes) and a no-op free.
func Alloc(n int) (b []byte, free func()) {
	if n <= 0 {
		return nil, func() {}
	}
	size := uintptr(n+PageSize-1) &^ (PageSize - 1)
	// over-map by one huge page, then unmap the unaligned head and the tail
	raw, err := unix.MmapPtr(-1, 0, nil, size+PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return heap(n)
	}
	head := (PageSize - uintptr(raw)%PageSize) % PageSize
	if head > 0 {
		_ = unix.MunmapPtr(raw, head)
	}
	start := unsafe.Add(raw, head)
	if tail := PageSize - head; tail > 0 {
		_ = unix.MunmapPtr(unsafe.Add(start, size), tail)
	}
	mem := unsafe.Slice((*byte)(start), size)
	_ = unix.Madvise(mem, unix.MADV_HUGEPAGE) // best effort: 4 KiB pages still work
	return mem[:n:n], func() { _ = unix.MunmapPtr(start, size) }
}
