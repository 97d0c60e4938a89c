package adapter

import (
	"fmt"
	"io"
	"os"
)

// readExactly fills b from the start of f and checks that f ends there.
func readExactly(f *os.File, b []byte) error {
	if _, err := f.ReadAt(b, 0); err != nil {
		if err == io.EOF {
			return fmt.Errorf("%w: the file shrank while it was read", ErrInvalid)
		}
		return err
	}
	var one [1]byte
	if n, _ := f.ReadAt(one[:], int64(len(b))); n != 0 {
		return fmt.Errorf("%w: the file grew while it was read", ErrInvalid)
	}
	return nil
}
