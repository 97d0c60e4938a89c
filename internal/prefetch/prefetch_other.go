//go:build !amd64

package prefetch

import "unsafe"

// T2 does nothing on this architecture (see prefetch_amd64.go).
func T2(base unsafe.Pointer, ix []uint32, shift uint) {}
