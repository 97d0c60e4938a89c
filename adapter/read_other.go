//go:build !unix

package adapter

import "os"

// openFile opens path for reading.
func openFile(path string) (*os.File, error) { return os.Open(path) }

// loadFile reads size bytes of f into an aligned buffer of its own: the
// adapter is a snapshot of the file.
func loadFile(f *os.File, size int) ([]byte, func() error, error) {
	b := alignedBytes(size)
	if err := readExactly(f, b); err != nil {
		return nil, nil, err
	}
	return b, func() error { return nil }, nil
}
