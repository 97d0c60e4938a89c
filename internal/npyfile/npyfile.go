// Package npyfile reads and writes NumPy .npy files as tensor.Tensor values,
// for the CLI's `run --input NAME=FILE.npy` and `--output-dir`.
//
// Headers (versions 1.0, 2.0 and 3.0) are parsed here with a small, strict
// parser of the header dictionary; every length is checked against the
// bytes available before anything is allocated, so a hostile file is an
// error, never a panic or a huge allocation. The data is read as raw
// little-endian bytes so float16 and bfloat16 need no per-element
// conversion. Write emits a version 1.0 header.
package npyfile

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/shira-ort/shira-ort/internal/atomicfile"
	"github.com/shira-ort/shira-ort/tensor"
)

// magic starts every .npy file (NumPy's format specification).
const magic = "\x93NUMPY"

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

// maxHeader bounds the header length accepted from a file (NumPy itself
// refuses headers over 10000 bytes unless asked to allow more).
const maxHeader = 1 << 20

// Read decodes one .npy stream. size is the number of bytes available (the
// file size), used to refuse a header that promises more data than exists
// before anything is allocated; pass -1 when unknown, in which case the
// data is read in growing chunks so memory stays proportional to the bytes
// actually present.
func Read(r io.Reader, size int64) (*tensor.Tensor, error) {
	h, hdrLen, err := readHeader(r, size)
	if err != nil {
		return nil, err
	}
	dt, ok := descrs[h.descr]
	if !ok {
		return nil, fmt.Errorf("%w: dtype %q (want little-endian numeric)", ErrFormat, h.descr)
	}
	if h.fortran && len(h.shape) > 1 {
		return nil, fmt.Errorf("%w: Fortran-order array; save it with np.ascontiguousarray", ErrFormat)
	}
	n, err := tensor.NumElements(h.shape)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFormat, err)
	}
	if int64(n) > math.MaxInt64/int64(dt.Size()) {
		return nil, fmt.Errorf("%w: shape %v of %v overflows", ErrFormat, h.shape, dt)
	}
	want := int64(n) * int64(dt.Size())
	if size >= 0 && want > size-hdrLen {
		return nil, fmt.Errorf("%w: shape %v needs %d data bytes, file has %d", ErrFormat, h.shape, want, size-hdrLen)
	}
	var data []byte
	if size >= 0 {
		data = make([]byte, want)
		_, err = io.ReadFull(r, data)
	} else {
		// unknown size: ReadAll grows with the data that really arrives
		data, err = io.ReadAll(io.LimitReader(r, want))
		if err == nil && int64(len(data)) < want {
			err = io.ErrUnexpectedEOF
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: reading %d data bytes: %w", ErrFormat, want, err)
	}
	return tensor.New(dt, shape64(h.shape), data)
}

// shape64 returns s, or an empty shape for nil (a 0-d tensor).
func shape64(s []int64) []int64 {
	if s == nil {
		return []int64{}
	}
	return s
}

// header is the parsed header dictionary.
type header struct {
	descr   string
	fortran bool
	shape   []int64
}

// readHeader reads the magic, version, header length and header
// dictionary, returning the header and the number of bytes consumed.
func readHeader(r io.Reader, size int64) (header, int64, error) {
	var pre [10]byte
	if _, err := io.ReadFull(r, pre[:8]); err != nil {
		return header{}, 0, fmt.Errorf("%w: reading magic: %w", ErrFormat, err)
	}
	if string(pre[:6]) != magic {
		return header{}, 0, fmt.Errorf("%w: not a .npy file (bad magic)", ErrFormat)
	}
	var hlen, prefix int64
	switch pre[6] {
	case 1:
		if _, err := io.ReadFull(r, pre[8:10]); err != nil {
			return header{}, 0, fmt.Errorf("%w: reading header length: %w", ErrFormat, err)
		}
		hlen, prefix = int64(binary.LittleEndian.Uint16(pre[8:10])), 10
	case 2, 3:
		var l [4]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return header{}, 0, fmt.Errorf("%w: reading header length: %w", ErrFormat, err)
		}
		hlen, prefix = int64(binary.LittleEndian.Uint32(l[:])), 12
	default:
		return header{}, 0, fmt.Errorf("%w: format version %d.%d", ErrFormat, pre[6], pre[7])
	}
	if hlen > maxHeader || (size >= 0 && hlen > size-prefix) {
		return header{}, 0, fmt.Errorf("%w: header length %d exceeds the file or the %d-byte limit", ErrFormat, hlen, maxHeader)
	}
	buf := make([]byte, hlen)
	if _, err := io.ReadFull(r, buf); err != nil {
		return header{}, 0, fmt.Errorf("%w: reading %d header bytes: %w", ErrFormat, hlen, err)
	}
	h, err := parseHeader(buf)
	if err != nil {
		return header{}, 0, fmt.Errorf("%w: header %q: %w", ErrFormat, truncate(buf, 80), err)
	}
	return h, prefix + hlen, nil
}

// truncate returns b as a string, cut after n bytes with "..." added.
func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// parseHeader parses the Python dict literal of a .npy header:
// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } in any key
// order, with NumPy's trailing spaces and newline.
func parseHeader(b []byte) (header, error) {
	p := &lit{s: b}
	var h header
	if !p.eat('{') {
		return h, errors.New("want a dictionary")
	}
	seen := map[string]bool{}
	for {
		if p.eat('}') {
			break
		}
		key, err := p.str()
		if err != nil {
			return h, fmt.Errorf("key: %w", err)
		}
		if seen[key] {
			return h, fmt.Errorf("duplicate key %q", key)
		}
		seen[key] = true
		if !p.eat(':') {
			return h, fmt.Errorf("want ':' after %q", key)
		}
		switch key {
		case "descr":
			if h.descr, err = p.str(); err != nil {
				return h, fmt.Errorf("descr: %w (structured dtypes are not supported)", err)
			}
		case "fortran_order":
			if h.fortran, err = p.boolean(); err != nil {
				return h, fmt.Errorf("fortran_order: %w", err)
			}
		case "shape":
			if h.shape, err = p.tuple(); err != nil {
				return h, fmt.Errorf("shape: %w", err)
			}
		default:
			return h, fmt.Errorf("unknown key %q", key)
		}
		if !p.eat(',') {
			if !p.eat('}') {
				return h, errors.New("want ',' or '}'")
			}
			break
		}
	}
	if !seen["descr"] || !seen["fortran_order"] || !seen["shape"] {
		return h, errors.New("want the keys 'descr', 'fortran_order' and 'shape'")
	}
	p.space()
	if p.i != len(p.s) {
		return h, errors.New("trailing bytes after the dictionary")
	}
	return h, nil
}

// lit scans a Python literal.
type lit struct {
	s []byte
	i int
}

// space skips white space.
func (p *lit) space() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\n' || p.s[p.i] == '\t' || p.s[p.i] == '\r') {
		p.i++
	}
}

// eat skips spaces and consumes c when it comes next.
func (p *lit) eat(c byte) bool {
	p.space()
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

// str reads a quoted string without escapes.
func (p *lit) str() (string, error) {
	p.space()
	if p.i >= len(p.s) || (p.s[p.i] != '\'' && p.s[p.i] != '"') {
		return "", errors.New("want a quoted string")
	}
	q := p.s[p.i]
	end := bytes.IndexByte(p.s[p.i+1:], q)
	if end < 0 {
		return "", errors.New("unterminated string")
	}
	v := p.s[p.i+1 : p.i+1+end]
	if bytes.IndexByte(v, '\\') >= 0 {
		return "", errors.New("escapes in strings are not supported")
	}
	p.i += end + 2
	return string(v), nil
}

// word reads an identifier or number.
func (p *lit) word() string {
	p.space()
	j := p.i
	for j < len(p.s) && (p.s[j] == '_' || p.s[j] == '-' || p.s[j] == '+' ||
		(p.s[j] >= '0' && p.s[j] <= '9') || (p.s[j] >= 'a' && p.s[j] <= 'z') || (p.s[j] >= 'A' && p.s[j] <= 'Z')) {
		j++
	}
	w := string(p.s[p.i:j])
	p.i = j
	return w
}

// boolean parses True or False.
func (p *lit) boolean() (bool, error) {
	switch w := p.word(); w {
	case "True":
		return true, nil
	case "False":
		return false, nil
	default:
		return false, fmt.Errorf("want True or False, got %q", w)
	}
}

// maxRank bounds the number of dimensions (NumPy's limit is 64).
const maxRank = 64

// tuple reads a tuple of non-negative integers (a trailing L, from
// Python 2 writers, is accepted).
func (p *lit) tuple() ([]int64, error) {
	if !p.eat('(') {
		return nil, errors.New("want a tuple")
	}
	var out []int64
	for !p.eat(')') {
		w := strings.TrimSuffix(p.word(), "L")
		d, err := strconv.ParseInt(w, 10, 64)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("dimension %q is not a non-negative integer", w)
		}
		if len(out) == maxRank {
			return nil, fmt.Errorf("more than %d dimensions", maxRank)
		}
		out = append(out, d)
		if !p.eat(',') {
			if !p.eat(')') {
				return nil, errors.New("want ',' or ')'")
			}
			break
		}
	}
	return out, nil
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
	buf.WriteString(magic)
	buf.Write([]byte{1, 0, byte(len(hdr)), byte(len(hdr) >> 8)})
	buf.WriteString(hdr)
	if _, err := w.Write(buf.Bytes()); err != nil {
		return err
	}
	_, err := w.Write(t.Data)
	return err
}

// WriteFile writes t to path through a temporary file and a rename
// (internal/atomicfile), so a crash or a kill never leaves a half-written
// file behind.
func WriteFile(path string, t *tensor.Tensor) error {
	f, err := atomicfile.Create(path)
	if err != nil {
		return fmt.Errorf("npy: %w", err)
	}
	defer f.Discard()
	bw := bufio.NewWriter(f)
	if err := Write(bw, t); err != nil {
		return fmt.Errorf("npy: write %s: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("npy: write %s: %w", path, err)
	}
	if err := f.Commit(); err != nil {
		return fmt.Errorf("npy: %w", err)
	}
	return nil
}
