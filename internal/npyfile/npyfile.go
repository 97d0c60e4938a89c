// Package npyfile reads and writes NumPy .npy files as tensor.Tensor values,
// for the CLI's `run --input NAME=FILE.npy` and `--output-dir`.
//
// Headers are parsed by codeberg.org/sbinet/npyio, which knows every header
// version; the data is then read as raw little-endian bytes so float16 and
// bfloat16 need no per-element conversion. npyio's writer derives the shape
// from a Go value and cannot take a shape known only at run time, so Write
// emits the (version 1.0) header itself.
package npyfile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"codeberg.org/sbinet/npyio/npy"

	"github.com/shira-ort/shira-ort/tensor"
)

// descrs maps little-endian NumPy type strings to element types. NumPy has no
// bfloat16; such tensors are written as raw uint16 ("<u2") bit patterns.
var descrs = map[string]tensor.DType{
	"<f4": tensor.Float32, "<f2": tensor.Float16, "<f8": tensor.Float64,
	"<i8": tensor.Int64, "<i4": tensor.Int32, "<i2": tensor.Int16, "|i1": tensor.Int8,
	"<u8": tensor.Uint64, "<u4": tensor.Uint32, "<u2": tensor.Uint16, "|u1": tensor.Uint8,
	"|b1": tensor.Bool,
}

// ErrFormat reports a .npy file this package cannot read.
var ErrFormat = errors.New("npy: unsupported file")

// Read decodes one .npy stream. size is the number of bytes available (the
// file size), used to refuse a header that promises more data than exists
// before anything is allocated; pass -1 when unknown.
func Read(r io.Reader, size int64) (*tensor.Tensor, error) {
	cr := &countingReader{r: r}
	rd, err := npy.NewReader(cr)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFormat, err)
	}
	h := rd.Header.Descr
	dt, ok := descrs[strings.Trim(h.Type, `'"`)]
	if !ok {
		return nil, fmt.Errorf("%w: dtype %q (want little-endian numeric)", ErrFormat, h.Type)
	}
	if h.Fortran && len(h.Shape) > 1 {
		return nil, fmt.Errorf("%w: Fortran-order array; save it with np.ascontiguousarray", ErrFormat)
	}
	shape := make([]int64, len(h.Shape))
	for i, d := range h.Shape {
		shape[i] = int64(d)
	}
	n, err := tensor.NumElements(shape)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFormat, err)
	}
	want := int64(n) * int64(dt.Size())
	if size >= 0 && cr.n+want > size {
		return nil, fmt.Errorf("%w: shape %v needs %d data bytes, file has %d", ErrFormat, shape, want, size-cr.n)
	}
	data := make([]byte, want)
	if _, err := io.ReadFull(cr, data); err != nil {
		return nil, fmt.Errorf("%w: reading %d data bytes: %w", ErrFormat, want, err)
	}
	return tensor.New(dt, shape, data)
}

// ReadFile reads a .npy file.
func ReadFile(path string) (*tensor.Tensor, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	t, err := Read(bufio.NewReader(f), st.Size())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// Write encodes t as a version 1.0 .npy stream.
func Write(w io.Writer, t *tensor.Tensor) error {
	descr := ""
	for d, dt := range descrs {
		if dt == t.DType {
			descr = d
		}
	}
	if t.DType == tensor.BFloat16 {
		descr = "<u2"
	}
	if descr == "" {
		return fmt.Errorf("npy: cannot write %v", t.DType)
	}
	dims := make([]string, len(t.Shape))
	for i, d := range t.Shape {
		dims[i] = fmt.Sprint(d)
	}
	shape := strings.Join(dims, ", ")
	if len(dims) == 1 {
		shape += ","
	}
	hdr := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, shape)
	// Magic (6) + version (2) + header length (2) + header + padding + '\n' is a multiple of 64.
	pad := 64 - (10+len(hdr)+1)%64
	if pad == 64 {
		pad = 0
	}
	hdr += strings.Repeat(" ", pad) + "\n"
	if len(hdr) > 0xffff {
		return fmt.Errorf("npy: header too long for version 1.0")
	}
	var buf bytes.Buffer
	buf.Write(npy.Magic[:])
	buf.Write([]byte{1, 0, byte(len(hdr)), byte(len(hdr) >> 8)})
	buf.WriteString(hdr)
	if _, err := w.Write(buf.Bytes()); err != nil {
		return err
	}
	_, err := w.Write(t.Data)
	return err
}

// WriteFile writes t to path through a temporary file and a rename, so a
// crash never leaves a half-written file behind.
func WriteFile(path string, t *tensor.Tensor) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	bw := bufio.NewWriter(tmp)
	if err := Write(bw, t); err != nil {
		tmp.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
