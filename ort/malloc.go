package ort

import (
	"os"
	"strings"
	"sync"

	"github.com/shira-ort/shira-ort/internal/ortshim"
)

// mallocMmapThreshold is the allocation size from which glibc's malloc
// maps memory of its own for each block once a baked or hybrid session is
// opened: prepacked weights and their copies are larger, so they go back
// to the operating system when a replaced session is freed.
const mallocMmapThreshold = 1 << 20

var tuneMallocOnce sync.Once

// tuneMalloc fixes glibc's mmap threshold, once per process, unless the
// user set it (MALLOC_MMAP_THRESHOLD_ or a GLIBC_TUNABLES malloc entry).
//
// Why: glibc raises the threshold each time an mmapped block is freed, so
// after the first rebuilt session is released, the next session's
// weight-sized buffers come from the heap; when that session is released
// in turn, they stay in the process as free heap that malloc_trim cannot
// always return. On the 67 M-parameter MLP this kept 150–200 MB (0.5× the
// weights) after a hybrid rebuild; with the threshold fixed the steady
// RSS equals a baked session's.
func tuneMalloc() {
	tuneMallocOnce.Do(func() {
		if os.Getenv("MALLOC_MMAP_THRESHOLD_") != "" || strings.Contains(os.Getenv("GLIBC_TUNABLES"), "glibc.malloc.") {
			return
		}
		ortshim.FixMmapThreshold(mallocMmapThreshold)
	})
}
