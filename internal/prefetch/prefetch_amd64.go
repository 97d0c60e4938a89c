package prefetch

import "unsafe"

// T2 issues PREFETCHT2 for the byte at base + ix[j]<<shift, for
// every j: it asks for the weight lines the next entries will touch
// without waiting for them (the instruction retires at once), so many
// more cache misses are in flight than the out-of-order window of the
// scatter loops allows on its own. The addresses need not be valid
// (prefetches never fault); the callers pass validated indices anyway.
//
//go:noescape
func T2(base unsafe.Pointer, ix []uint32, shift uint)
