//go:build !unix

package adapter

import (
	"io"
	"os"
)

// mapFile reads the file into an aligned buffer where mmap is unavailable.
func mapFile(f *os.File, size int) ([]byte, func() error, error) {
	b := alignedBytes(size)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, nil, err
	}
	return b, func() error { return nil }, nil
}
