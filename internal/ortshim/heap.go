package ortshim

/*
#include "shim.h"
*/
import "C"

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
