//go:build unix

package registry

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// reserve returns size bytes of read-only zero memory backed by no pages
// (an anonymous mapping nothing ever touches) and the function that
// releases it.
func reserve(size int64) ([]byte, func() error, error) {
	if size == 0 {
		return nil, func() error { return nil }, nil
	}
	b, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANON|unix.MAP_NORESERVE)
	if err != nil {
		return nil, nil, err
	}
	return b, func() error { return unix.Munmap(b) }, nil
}

// openRead opens path for reading without blocking on a FIFO.
func openRead(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}
