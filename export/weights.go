package export

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
)

// readEntry reads and verifies one exposed tensor from the weight file.
func readEntry(f *os.File, e *TensorEntry) ([]byte, error) {
	// the manifest is input: check the range against the file before
	// allocating for it
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	if e.Offset < 0 || e.Length < 0 || e.Offset > st.Size() || e.Length > st.Size()-e.Offset {
		return nil, fmt.Errorf("%w: weight %q at %d+%d is beyond the end of %s (%d bytes)", ErrManifest, e.Name, e.Offset, e.Length, f.Name(), st.Size())
	}
	b := make([]byte, e.Length)
	if _, err := f.ReadAt(b, e.Offset); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("export: weight %q at %d+%d: %w", e.Name, e.Offset, e.Length, err)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != e.SHA256 {
		return nil, fmt.Errorf("%w: weight %q: sha256 mismatch in %s (file changed since export?)", ErrManifest, e.Name, f.Name())
	}
	return b, nil
}
