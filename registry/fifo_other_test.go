//go:build !unix

package registry_test

import "errors"

// mkfifo is not available here.
func mkfifo(path string) error { return errors.New("no FIFOs") }
