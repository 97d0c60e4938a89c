package main

import (
	"fmt"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/atomicfile"
)

// writeAdapter encodes a and writes it to path atomically through
// internal/atomicfile, like every other file the CLI writes: a killed
// process leaves the old file or the new one (never a partial file), and
// the hidden temporary file of a killed writer is swept by the next write
// of the same path.
func writeAdapter(path string, a *adapter.Adapter) error {
	b, err := adapter.Encode(a)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, b); err != nil {
		return fmt.Errorf("write adapter: %w", err)
	}
	return nil
}
