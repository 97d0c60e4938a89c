package adapter

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/shira-ort/shira-ort/adapter/internal/shirafb"
	"github.com/shira-ort/shira-ort/tensor"
)

// Decode verifies b as a .shira file and returns the adapter it holds.
//
// Indices and Values alias b when they are suitably aligned in memory (4
// and 8 bytes; always true for buffers from Encode, Open or a fresh
// allocation) and are copied otherwise, so b must not be modified while
// the adapter is in use. Every structural or content problem is an error
// wrapping [ErrInvalid] or [ErrUnsupported] that names the offending
// field and tensor; Decode never panics on bad input.
func Decode(b []byte) (*Adapter, error) {
	a, err := decode(b)
	if err != nil {
		return nil, fmt.Errorf("adapter: decode: %w", err)
	}
	return a, nil
}

func decode(b []byte) (*Adapter, error) {
	root, meta, tensors, err := verifyStructure(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	var r shirafb.Adapter
	r.Init(b, flatbuffers.UOffsetT(root.pos))
	switch ver := r.FormatVersion(); {
	case ver == 0:
		return nil, fmt.Errorf("%w: format_version missing", ErrInvalid)
	case ver != FormatVersion:
		return nil, fmt.Errorf("%w: format version %d (this reader knows %d)", ErrUnsupported, ver, FormatVersion)
	}
	a := &Adapter{
		Name:             string(r.Name()),
		DefaultAlpha:     r.DefaultAlpha(),
		Semantics:        Semantics(r.Semantics()),
		ModelFingerprint: string(r.ModelFingerprint()),
	}
	if !a.Semantics.valid() {
		return nil, fmt.Errorf("%w: semantics %d", ErrUnsupported, uint8(r.Semantics()))
	}
	if len(meta) > 0 {
		a.Metadata = make(map[string]string, len(meta))
		for _, m := range meta {
			var kv shirafb.KeyValue
			kv.Init(b, flatbuffers.UOffsetT(m.pos))
			k := string(kv.Key())
			if _, dup := a.Metadata[k]; dup {
				return nil, fmt.Errorf("%w: duplicate metadata key %q", ErrInvalid, k)
			}
			a.Metadata[k] = string(kv.Value())
		}
	}
	v := &verifier{b: b}
	a.Tensors = make([]Tensor, len(tensors))
	for i, tt := range tensors {
		if err := decodeTensor(v, tt, &a.Tensors[i]); err != nil {
			return nil, fmt.Errorf("tensors[%d]: %w", i, err)
		}
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	return a, nil
}

func decodeTensor(v *verifier, tt fbTable, t *Tensor) error {
	var ft shirafb.Tensor
	ft.Init(v.b, flatbuffers.UOffsetT(tt.pos))
	t.Name = string(ft.Name())
	enc := ft.IndexEncoding()
	if enc != shirafb.IndexEncodingFlatU32 && enc != shirafb.IndexEncodingGapU16 {
		return fmt.Errorf("%w: tensor %q: index encoding %d (this reader knows flat uint32 = 0 and uint16 gaps = 1)", ErrUnsupported, t.Name, enc)
	}
	t.DType = tensor.DType(ft.Dtype())
	t.ValueDType = tensor.DType(ft.ValueDtype())
	switch base := ft.BaseSha256Bytes(); len(base) {
	case 0:
	case 32:
		copy(t.BaseSHA256[:], base)
	default:
		return fmt.Errorf("%w: tensor %q: base_sha256 has %d bytes (want 32 or none)", ErrInvalid, t.Name, len(base))
	}
	shape, _ := v.vector(tt, slotTensorShape, 8, "shape") // verified already
	t.Shape = make([]int64, shape.n)
	for j := range t.Shape {
		t.Shape[j] = int64(binary.LittleEndian.Uint64(v.b[shape.start+8*j:]))
	}
	ix, _ := v.vector(tt, slotTensorIndices, 4, "indices")
	gaps, _ := v.vector(tt, slotTensorIndexGaps, 2, "index_gaps")
	if enc == shirafb.IndexEncodingGapU16 {
		if ix.n > 0 {
			return fmt.Errorf("%w: tensor %q: uint16-gap encoding with %d flat indices", ErrInvalid, t.Name, ix.n)
		}
	} else if gaps.n > 0 {
		return fmt.Errorf("%w: tensor %q: flat encoding with %d index gaps", ErrInvalid, t.Name, gaps.n)
	}
	if ix.n > 0 {
		raw := v.b[ix.start : ix.start+4*ix.n]
		if aligned(raw, 4) {
			t.Indices = unsafe.Slice((*uint32)(unsafe.Pointer(&raw[0])), ix.n)
		} else {
			t.Indices = make([]uint32, ix.n)
			for j := range t.Indices {
				t.Indices[j] = binary.LittleEndian.Uint32(raw[4*j:])
			}
		}
	}
	vals, _ := v.vector(tt, slotTensorValues, 1, "values")
	if vals.n > 0 {
		raw := v.b[vals.start : vals.start+vals.n : vals.start+vals.n]
		if aligned(raw, 8) {
			t.Values = raw
		} else {
			t.Values = append(alignedBytes(len(raw))[:0], raw...)
		}
	}
	if enc == shirafb.IndexEncodingGapU16 {
		es := t.ValueDType.Size()
		if !t.ValueDType.IsFloat() && !t.CodeValues() || es == 0 || len(t.Values)%es != 0 {
			return fmt.Errorf("%w: tensor %q: value dtype %v with %d value bytes", ErrInvalid, t.Name, t.ValueDType, len(t.Values))
		}
		numel, err := tensor.NumElements(t.Shape)
		if err != nil {
			return fmt.Errorf("%w: tensor %q: %w", ErrInvalid, t.Name, err)
		}
		raw := v.b[gaps.start : gaps.start+2*gaps.n]
		if t.Indices, err = decodeGaps(raw, len(t.Values)/es, numel); err != nil {
			return fmt.Errorf("%w: tensor %q: index_gaps: %w", ErrInvalid, t.Name, err)
		}
	}
	return nil
}

// aligned reports whether b starts at a multiple of n in memory.
func aligned(b []byte, n uintptr) bool {
	return len(b) == 0 || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%n == 0
}

// alignedBytes returns a zeroed n-byte slice (capacity rounded up to 8)
// starting 8-byte aligned.
func alignedBytes(n int) []byte {
	w := make([]int64, (n+7)/8)
	return tensor.Bytes(w)[:n]
}

// Open loads the .shira file at path and decodes it without copying (see
// [Decode]). The adapter is a snapshot: the file may be rewritten,
// truncated or removed afterwards without affecting it. Where the kernel
// grants a read lease (Linux, the caller's own file), the file is mapped
// and another process that begins to write it waits until the mapped bytes
// have been copied; otherwise the file is read into memory at once. Call [Adapter.Close] when
// done; users that keep reading the adapter's slices (patch.Patcher,
// ort.Session) [Adapter.Retain] it, and the memory lives until the last of
// them lets go.
func Open(path string) (*Adapter, error) {
	f, err := openFile(path)
	if err != nil {
		return nil, fmt.Errorf("adapter: open: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("adapter: open: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("adapter: open %s: %w: not a regular file", path, ErrInvalid)
	}
	if st.Size() < 8 || st.Size() > maxFileSize {
		return nil, fmt.Errorf("adapter: open %s: %w: size %d bytes", path, ErrInvalid, st.Size())
	}
	b, unmap, err := loadFile(f, int(st.Size()))
	if err != nil {
		return nil, fmt.Errorf("adapter: open %s: %w", path, err)
	}
	a, err := decode(b)
	if err != nil {
		unmap()
		return nil, fmt.Errorf("adapter: open %s: %w", path, err)
	}
	a.m = &mapping{unmap: unmap, tensors: a.Tensors}
	return a, nil
}
