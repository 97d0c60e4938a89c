package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/atomicfile"
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

// String names the encoding.
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

// openExported opens the exported model directory named by a --model or
// --base flag; a model file instead of a directory gets a message saying
// how to make one.
func openExported(dir string) (*export.Model, error) {
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("%s is a model file; this needs an exported model directory: run `shira-ort export %s -o DIR` and pass DIR", dir, dir)
	}
	return export.Open(dir)
}

// openModelOrExport opens an exported model directory, or exports an ONNX
// file into a temporary directory (removed when the returned model is
// closed) and opens that.
func openModelOrExport(ctx context.Context, path string) (*exportedModel, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		m, err := export.Open(path)
		if err != nil {
			return nil, err
		}
		return &exportedModel{Model: m}, nil
	}
	tmp, err := os.MkdirTemp("", "shira-ort-export-*")
	if err != nil {
		return nil, err
	}
	if _, err := export.Expose(ctx, path, tmp, export.Options{}); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("exporting %s: %w", path, err)
	}
	m, err := export.Open(tmp)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	return &exportedModel{Model: m, tmp: tmp}, nil
}

// exportedModel is an export.Model that may live in a temporary directory
// of its own.
type exportedModel struct {
	*export.Model
	tmp string
}

// Close closes the model and removes its temporary directory.
func (m *exportedModel) Close() error {
	err := m.Model.Close()
	if m.tmp != "" {
		os.RemoveAll(m.tmp)
	}
	return err
}
