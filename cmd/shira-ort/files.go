package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/atomicfile"
	"github.com/shira-ort/shira-ort/patch"
)

// adapterName is the name an adapter written to out gets: name, or the
// file name of out without its extension when name is empty.
func adapterName(name, out string) string {
	if name != "" {
		return name
	}
	return strings.TrimSuffix(filepath.Base(out), filepath.Ext(out))
}

// offlineFuseOptions are the patch options of an offline fuse (apply,
// bake): never write NaN or Inf weights, round quantized weights with r,
// and with force skip the fingerprint check.
func offlineFuseOptions(r patch.Rounding, force bool) []patch.Option {
	opts := []patch.Option{patch.WithFiniteCheck(), patch.WithRounding(r)}
	if force {
		opts = append(opts, patch.WithoutFingerprintCheck())
	}
	return opts
}

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

// errOverwritesInput is wrapped by the error of a command asked to write
// over a file it reads (apply -o onto its exported model, export into its
// source's directory over the source).
var errOverwritesInput = errors.New("output would replace an input")

// inputFile is a file a command reads, and what it is (for messages).
type inputFile struct{ path, what string }

// refuseOverwrite returns an error wrapping errOverwritesInput when
// writing any of outputs — by renaming a new file into place, as every
// file the CLI writes is — would replace one of inputs. It is called
// before anything is written. flag and value are the option that chose
// the outputs, for the message.
func refuseOverwrite(flag, value string, outputs []string, inputs []inputFile) error {
	for _, o := range outputs {
		for _, in := range inputs {
			if !replaces(o, in.path) {
				continue
			}
			what := in.what
			if filepath.Clean(in.path) != filepath.Clean(o) {
				what += " " + in.path
			}
			if filepath.Clean(o) != filepath.Clean(value) {
				what = o + " is " + what
			} else {
				what = "it is " + what
			}
			return fmt.Errorf("%s %s: %w: %s; write somewhere else", flag, value, errOverwritesInput, what)
		}
	}
	return nil
}

// replaces reports whether renaming a file onto out would replace the
// file in reads, or the directory entry it is read through: out is the
// same file as in (os.SameFile, which sees through symbolic links in the
// directories, hard links and a file system that ignores case), the same
// symbolic link, or — when out does not exist yet — the same name in the
// same directory.
func replaces(out, in string) bool {
	if lo, err := os.Lstat(out); err == nil {
		if si, err := os.Stat(in); err == nil && os.SameFile(lo, si) {
			return true
		}
		if li, err := os.Lstat(in); err == nil && os.SameFile(lo, li) {
			return true
		}
	}
	if filepath.Base(out) != filepath.Base(in) {
		return false
	}
	od, err1 := os.Stat(filepath.Dir(out))
	id, err2 := os.Stat(filepath.Dir(in))
	return err1 == nil && err2 == nil && os.SameFile(od, id)
}

// refuseStandaloneOver refuses (see refuseOverwrite) an -o out for
// export.Model.WriteStandalone that would replace a file of the exported
// model m or one of more inputs. WriteStandalone writes out, and out.data
// beside it for a model over 2 GB.
func refuseStandaloneOver(out string, m *export.Model, more ...inputFile) error {
	outs := []string{out, filepath.Join(filepath.Dir(out), filepath.Base(out)+".data")}
	man := m.Manifest()
	inputs := append([]inputFile{
		{filepath.Join(m.Dir(), export.ManifestFile), "the --model directory's manifest"},
		{filepath.Join(m.Dir(), man.Model), "the --model directory's model"},
		{filepath.Join(m.Dir(), man.WeightsFile), "the --model directory's weight file"},
	}, more...)
	return refuseOverwrite("-o", out, outs, inputs)
}

// adapterInputs lists the files named by --adapter flags (flags that do
// not parse are left to openAdapters to report).
func adapterInputs(flags []string) []inputFile {
	var out []inputFile
	for _, f := range flags {
		if spec, err := parseAdapterSpec(f); err == nil {
			out = append(out, inputFile{spec.Path, "an --adapter file"})
		}
	}
	return out
}
