package main

import (
	"fmt"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/atomicfile"
	"github.com/spf13/pflag"
)

// writeAdapter encodes a and writes it to path atomically through
// internal/atomicfile, like every other file the CLI writes: a killed
// process leaves the old file or the new one (never a partial file), and
// the hidden temporary file of a killed writer is swept by the next write
// of the same path.
func writeAdapter(path string, a *adapter.Adapter, enc adapter.IndexEncoding) error {
	b, err := adapter.EncodeWith(a, adapter.EncodeOptions{Index: enc})
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, b); err != nil {
		return fmt.Errorf("write adapter: %w", err)
	}
	return nil
}

// indexEncodingFlag is the --index-encoding flag of the commands that write
// adapters.
type indexEncodingFlag struct{ enc adapter.IndexEncoding }

func (f *indexEncodingFlag) String() string { return f.enc.String() }

// Set parses flat-u32 or gap-u16.
func (f *indexEncodingFlag) Set(s string) error {
	e, err := adapter.ParseIndexEncoding(s)
	if err != nil {
		return err
	}
	f.enc = e
	return nil
}

// Type names the flag's value in the help.
func (f *indexEncodingFlag) Type() string { return "encoding" }

// addIndexEncodingFlag registers --index-encoding on f.
func addIndexEncodingFlag(f *pflag.FlagSet, v *indexEncodingFlag) {
	v.enc = adapter.DefaultIndexEncoding
	f.Var(v, "index-encoding", "how the .shira file stores indices: flat-u32 (used in place, fastest to load) or gap-u16 (25-33 % smaller files, decoded on load)")
}
