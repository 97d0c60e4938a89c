package export

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/shira-ort/shira-ort/internal/atomicfile"
)

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
