package adapter

import (
	"encoding/binary"
	"fmt"
)

// The Go FlatBuffers runtime reads whatever offsets a buffer holds and
// panics (or reads garbage) when they point outside it. verifier walks the
// buffer first and checks every table, vtable, offset, vector and string
// against the bounds, so the generated accessors are only used on
// positions known to be in range.

// Vtable slots (byte offsets into the vtable) of the schema's fields, in
// declaration order; they must match adapter/schema/shira.fbs.
const (
	slotAdapterFormatVersion    = 4
	slotAdapterName             = 6
	slotAdapterDefaultAlpha     = 8
	slotAdapterSemantics        = 10
	slotAdapterModelFingerprint = 12
	slotAdapterMetadata         = 14
	slotAdapterTensors          = 16

	slotKeyValueKey   = 4
	slotKeyValueValue = 6

	slotTensorName          = 4
	slotTensorShape         = 6
	slotTensorDType         = 8
	slotTensorValueDType    = 10
	slotTensorBaseSHA256    = 12
	slotTensorIndexEncoding = 14
	slotTensorIndices       = 16
	slotTensorValues        = 18
	slotTensorIndexGaps     = 20
)

type verifier struct{ b []byte }

// fbTable is a verified table: its position and its vtable.
type fbTable struct {
	pos, vt, vtLen, tblLen int
}

type vecRef struct {
	start, n int // start of the elements, number of elements
	present  bool
}

func (v *verifier) u16(p int) int { return int(binary.LittleEndian.Uint16(v.b[p:])) }
func (v *verifier) u32(p int) int { return int(binary.LittleEndian.Uint32(v.b[p:])) }

// in reports whether [p, p+n) lies inside the buffer (no overflow: the
// buffer is < 2 GiB and p, n come from 32-bit fields).
func (v *verifier) in(p, n int) bool { return p >= 0 && n >= 0 && p+n <= len(v.b) }

func (v *verifier) table(pos int, what string) (fbTable, error) {
	if !v.in(pos, 4) {
		return fbTable{}, fmt.Errorf("%s: table offset %d outside the %d-byte buffer", what, pos, len(v.b))
	}
	so := int(int32(binary.LittleEndian.Uint32(v.b[pos:])))
	vt := pos - so
	if !v.in(vt, 4) {
		return fbTable{}, fmt.Errorf("%s: vtable offset %d outside the buffer", what, vt)
	}
	t := fbTable{pos: pos, vt: vt, vtLen: v.u16(vt), tblLen: v.u16(vt + 2)}
	if t.vtLen < 4 || t.vtLen%2 != 0 || !v.in(vt, t.vtLen) {
		return fbTable{}, fmt.Errorf("%s: bad vtable size %d at %d", what, t.vtLen, vt)
	}
	if t.tblLen < 4 || !v.in(pos, t.tblLen) {
		return fbTable{}, fmt.Errorf("%s: bad table size %d at %d", what, t.tblLen, pos)
	}
	return t, nil
}

// field returns the position of the field in slot, 0 when absent, or an
// error when the field does not fit inside its table.
func (v *verifier) field(t fbTable, slot, size int, what string) (int, error) {
	if slot+2 > t.vtLen {
		return 0, nil
	}
	off := v.u16(t.vt + slot)
	if off == 0 {
		return 0, nil
	}
	if off < 4 || off+size > t.tblLen {
		return 0, fmt.Errorf("%s: field at table offset %d (size %d) outside the %d-byte table", what, off, size, t.tblLen)
	}
	return t.pos + off, nil
}

// indirect follows the uoffset field in slot.
func (v *verifier) indirect(t fbTable, slot int, what string) (int, bool, error) {
	p, err := v.field(t, slot, 4, what)
	if err != nil || p == 0 {
		return 0, false, err
	}
	target := p + v.u32(p)
	if !v.in(target, 4) {
		return 0, false, fmt.Errorf("%s: offset %d outside the %d-byte buffer", what, target, len(v.b))
	}
	return target, true, nil
}

// vector verifies the vector in slot with elements of elemSize bytes.
func (v *verifier) vector(t fbTable, slot, elemSize int, what string) (vecRef, error) {
	p, ok, err := v.indirect(t, slot, what)
	if err != nil || !ok {
		return vecRef{}, err
	}
	n := v.u32(p)
	if n > (len(v.b)-p-4)/elemSize {
		return vecRef{}, fmt.Errorf("%s: vector of %d elements of %d bytes at %d runs past the %d-byte buffer", what, n, elemSize, p, len(v.b))
	}
	return vecRef{start: p + 4, n: n, present: true}, nil
}

// str verifies the string in slot, including its NUL terminator.
func (v *verifier) str(t fbTable, slot int, required bool, what string) error {
	r, err := v.vector(t, slot, 1, what)
	if err != nil {
		return err
	}
	if !r.present {
		if required {
			return fmt.Errorf("%s: required string missing", what)
		}
		return nil
	}
	if !v.in(r.start+r.n, 1) || v.b[r.start+r.n] != 0 {
		return fmt.Errorf("%s: string not NUL-terminated", what)
	}
	return nil
}

// tables verifies a vector of tables and returns their positions.
func (v *verifier) tables(t fbTable, slot int, what string) ([]fbTable, error) {
	r, err := v.vector(t, slot, 4, what)
	if err != nil || !r.present {
		return nil, err
	}
	out := make([]fbTable, r.n)
	for i := range out {
		p := r.start + 4*i
		tt, err := v.table(p+v.u32(p), fmt.Sprintf("%s[%d]", what, i))
		if err != nil {
			return nil, err
		}
		out[i] = tt
	}
	return out, nil
}

// verifyStructure checks the whole buffer and returns the verified root,
// metadata and tensor tables.
func verifyStructure(b []byte) (root fbTable, meta, tensors []fbTable, err error) {
	if len(b) < 8 {
		return root, nil, nil, fmt.Errorf("%d bytes is too short for a .shira file", len(b))
	}
	if len(b) > maxFileSize {
		return root, nil, nil, fmt.Errorf("%d bytes is larger than a FlatBuffer can be", len(b))
	}
	if string(b[4:8]) != fileIdentifier {
		return root, nil, nil, fmt.Errorf("file identifier %q, want %q (not a .shira file)", b[4:8], fileIdentifier)
	}
	v := &verifier{b: b}
	if root, err = v.table(v.u32(0), "root"); err != nil {
		return
	}
	for _, f := range []struct {
		slot, size int
		what       string
	}{
		{slotAdapterFormatVersion, 4, "format_version"},
		{slotAdapterDefaultAlpha, 4, "default_alpha"},
		{slotAdapterSemantics, 1, "semantics"},
	} {
		if _, err = v.field(root, f.slot, f.size, f.what); err != nil {
			return
		}
	}
	if err = v.str(root, slotAdapterName, false, "name"); err != nil {
		return
	}
	if err = v.str(root, slotAdapterModelFingerprint, false, "model_fingerprint"); err != nil {
		return
	}
	if meta, err = v.tables(root, slotAdapterMetadata, "metadata"); err != nil {
		return
	}
	for i, kv := range meta {
		what := fmt.Sprintf("metadata[%d]", i)
		if err = v.str(kv, slotKeyValueKey, true, what+".key"); err != nil {
			return
		}
		if err = v.str(kv, slotKeyValueValue, false, what+".value"); err != nil {
			return
		}
	}
	if tensors, err = v.tables(root, slotAdapterTensors, "tensors"); err != nil {
		return
	}
	for i, t := range tensors {
		what := fmt.Sprintf("tensors[%d]", i)
		if err = v.str(t, slotTensorName, true, what+".name"); err != nil {
			return
		}
		for _, f := range []struct {
			slot, size int
			what       string
		}{
			{slotTensorDType, 4, ".dtype"},
			{slotTensorValueDType, 4, ".value_dtype"},
			{slotTensorIndexEncoding, 1, ".index_encoding"},
		} {
			if _, err = v.field(t, f.slot, f.size, what+f.what); err != nil {
				return
			}
		}
		for _, f := range []struct {
			slot, size int
			what       string
		}{
			{slotTensorShape, 8, ".shape"},
			{slotTensorBaseSHA256, 1, ".base_sha256"},
			{slotTensorIndices, 4, ".indices"},
			{slotTensorValues, 1, ".values"},
			{slotTensorIndexGaps, 2, ".index_gaps"},
		} {
			if _, err = v.vector(t, f.slot, f.size, what+f.what); err != nil {
				return
			}
		}
	}
	return root, meta, tensors, nil
}
