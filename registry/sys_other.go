//go:build !unix

package registry

import "os"

// reserve returns size bytes of zero memory (on these systems an
// allocation: the operating system may commit it).
func reserve(size int64) ([]byte, func() error, error) {
	return make([]byte, size), func() error { return nil }, nil
}

// openRead opens path for reading.
func openRead(path string) (*os.File, error) { return os.Open(path) }
