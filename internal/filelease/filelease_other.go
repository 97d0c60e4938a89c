//go:build !linux

package filelease

import (
	"fmt"
	"os"
)

// Lease is a read lease on one open file (Linux only).
type Lease struct{}

// Hold returns an error wrapping ErrUnsupported outside Linux.
func Hold(f *os.File, onBreak func()) (*Lease, error) {
	return nil, fmt.Errorf("%w: file leases are Linux only", ErrUnsupported)
}

// Release does nothing.
func (l *Lease) Release() error { return nil }

// Broken reports false.
func (l *Lease) Broken() bool { return false }

// Snapshot returns an error wrapping ErrUnsupported outside Linux.
func Snapshot(b []byte, prot int) error {
	return fmt.Errorf("%w: in-place snapshots are Linux only", ErrUnsupported)
}
