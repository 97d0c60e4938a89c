package export

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/shira-ort/shira-ort/internal/atomicfile"
	"github.com/shira-ort/shira-ort/internal/onnxwire"
)

// ErrOverwritesInput is wrapped by the errors of Expose and
// Model.WriteStandalone when a file they would write is one they read: the
// source model or one of its external-data files, the files of the
// exported directory. Such a call is refused before anything is written.
var ErrOverwritesInput = errors.New("export: output would overwrite an input")

// input is a file an export or standalone model is made from.
type input struct {
	what string // for messages: "the source model", ...
	fi   os.FileInfo
}

// externalInputs returns the files that model's external tensors are read
// from (each opened as Tensor.Open does, so its errors are Open's).
func externalInputs(model *onnxwire.Model, dir string) ([]input, error) {
	var out []input
	seen := map[string]bool{}
	err := model.WalkTensors(func(t *onnxwire.Tensor) error {
		ext, isExt, err := t.External()
		if err != nil || !isExt || seen[ext.Location] {
			return err
		}
		seen[ext.Location] = true
		f, err := onnxwire.OpenInDir(dir, ext.Location)
		if err != nil {
			return fmt.Errorf("tensor %q external data: %w", t.Name(), err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		out = append(out, input{what: "external data " + ext.Location, fi: fi})
		return nil
	})
	return out, err
}

// checkOutputs refuses, with ErrOverwritesInput, an output path that names
// one of the inputs (after following symbolic links; hard links are the
// same file too). Outputs that do not exist yet overwrite nothing.
func checkOutputs(outputs []string, inputs []input) error {
	for _, p := range outputs {
		fi, err := os.Stat(p)
		if err != nil {
			continue // nothing there to lose (or creating it fails later)
		}
		for _, in := range inputs {
			if os.SameFile(fi, in.fi) {
				return fmt.Errorf("%w: %s is %s", ErrOverwritesInput, p, in.what)
			}
		}
	}
	return nil
}

// pending is a file written under a temporary name, renamed on commit
// (see internal/atomicfile).
type pending struct {
	f *atomicfile.File
}

func createPending(final string) (*pending, error) {
	f, err := atomicfile.Create(final)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	return &pending{f: f}, nil
}

// commit syncs the temporary file and renames it into place.
func (p *pending) commit() error {
	if err := p.f.Commit(); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

// discard removes the temporary file (after a failure); it does nothing
// after commit or on nil.
func (p *pending) discard() {
	if p != nil {
		p.f.Discard()
	}
}

// alignedWriter appends tensors to a weight file at aligned offsets.
type alignedWriter struct {
	w     *bufio.Writer
	pos   int64
	align int64
	zero  []byte
}

func newAlignedWriter(f io.Writer, align int64) *alignedWriter {
	return &alignedWriter{w: bufio.NewWriterSize(f, 4<<20), align: align}
}

// pad writes zeros up to the next aligned offset.
func (a *alignedWriter) pad() error {
	rem := a.pos % a.align
	if rem == 0 {
		return nil
	}
	n := a.align - rem
	if int64(len(a.zero)) < n {
		a.zero = make([]byte, n)
	}
	if _, err := a.w.Write(a.zero[:n]); err != nil {
		return err
	}
	a.pos += n
	return nil
}

// put writes size bytes from r at the next aligned offset and returns the
// offset and the hex sha256 of the bytes.
func (a *alignedWriter) put(r io.Reader, size int64) (int64, string, error) {
	if err := a.pad(); err != nil {
		return 0, "", fmt.Errorf("export: weight file: %w", err)
	}
	off := a.pos
	h := sha256.New()
	n, err := io.Copy(a.w, io.TeeReader(io.LimitReader(r, size), h))
	a.pos += n
	if err != nil {
		return 0, "", fmt.Errorf("export: weight file: %w", err)
	}
	if n != size {
		return 0, "", fmt.Errorf("export: weight file: short read: %d of %d bytes", n, size)
	}
	return off, hex.EncodeToString(h.Sum(nil)), nil
}

// finish pads the file to a whole number of aligned blocks and flushes it
// (so the last tensor's page can be mapped entirely).
func (a *alignedWriter) finish() error {
	if err := a.pad(); err != nil {
		return fmt.Errorf("export: weight file: %w", err)
	}
	if err := a.w.Flush(); err != nil {
		return fmt.Errorf("export: weight file: %w", err)
	}
	return nil
}
