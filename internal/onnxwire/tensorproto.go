package onnxwire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"

	"github.com/shira-ort/shira-ort/tensor"
	"google.golang.org/protobuf/encoding/protowire"
)

// Tensor is a parsed TensorProto.
type Tensor struct{ *Message }

// ExternalData is where a tensor with data_location = EXTERNAL keeps its
// bytes: Location is relative to the model's directory, Length is -1 when
// the entry does not say (the tensor's byte size is used then).
type ExternalData struct {
	Location string
	Offset   int64
	Length   int64
	Checksum string
}

// dataFields are the TensorProto fields that hold or locate the data.
var dataFields = []protowire.Number{
	TensorFloatData, TensorInt32Data, TensorStringData, TensorInt64Data, TensorRawData,
	TensorDoubleData, TensorUint64Data, TensorExternalData, TensorDataLocation,
}

// Name returns TensorProto.name.
func (t *Tensor) Name() string { return t.getString(TensorName) }

// SetName sets TensorProto.name in place.
func (t *Tensor) SetName(name string) { t.SetString(TensorName, name) }

// DType returns TensorProto.data_type.
func (t *Tensor) DType() tensor.DType { v, _ := t.getInt(TensorDataType, 0); return tensor.DType(v) }

// Dims returns TensorProto.dims.
func (t *Tensor) Dims() ([]int64, error) {
	d, err := t.Int64s(TensorDims)
	if err != nil {
		return nil, fmt.Errorf("onnxwire: tensor %q dims: %w", t.Name(), err)
	}
	return d, nil
}

// NumBytes returns the byte size of the tensor's data (elements × element
// size) for fixed-size element types.
func (t *Tensor) NumBytes() (int64, error) {
	dims, err := t.Dims()
	if err != nil {
		return 0, err
	}
	n, err := tensor.NumElements(dims)
	if err != nil {
		return 0, fmt.Errorf("onnxwire: tensor %q: %w", t.Name(), err)
	}
	sz := t.DType().Size()
	if sz == 0 {
		return 0, fmt.Errorf("onnxwire: tensor %q: %v has no fixed element size", t.Name(), t.DType())
	}
	if int64(n) > math.MaxInt64/int64(sz) {
		return 0, fmt.Errorf("onnxwire: tensor %q: %w: byte size overflows", t.Name(), tensor.ErrShape)
	}
	return int64(n) * int64(sz), nil
}

// IsExternal reports whether data_location is EXTERNAL.
func (t *Tensor) IsExternal() bool {
	v, _ := t.getInt(TensorDataLocation, DataLocationDefault)
	return v == DataLocationExternal
}

// External returns the external data entry of an external tensor.
func (t *Tensor) External() (ExternalData, bool, error) {
	if !t.IsExternal() {
		return ExternalData{}, false, nil
	}
	e := ExternalData{Length: -1}
	entries, err := t.messages(TensorExternalData)
	if err != nil {
		return e, true, fmt.Errorf("onnxwire: tensor %q external_data: %w", t.Name(), err)
	}
	for _, kv := range entries {
		k, v := kv.getString(EntryKey), kv.getString(EntryValue)
		switch k {
		case "location":
			e.Location = v
		case "offset", "length":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return e, true, fmt.Errorf("onnxwire: tensor %q external_data %s=%q: %w", t.Name(), k, v, ErrMalformed)
			}
			if k == "offset" {
				e.Offset = n
			} else {
				e.Length = n
			}
		case "checksum":
			e.Checksum = v
		}
	}
	if e.Location == "" {
		return e, true, fmt.Errorf("onnxwire: tensor %q: %w: external data without location", t.Name(), ErrMalformed)
	}
	return e, true, nil
}

// SetExternal drops every inline data field and points the tensor at ext
// (data_location = EXTERNAL, external_data location/offset/length).
func (t *Tensor) SetExternal(ext ExternalData) {
	t.Remove(dataFields...)
	kv := func(k, v string) {
		e := &Message{}
		e.Append(StringField(EntryKey, k))
		e.Append(StringField(EntryValue, v))
		t.Append(MessageField(TensorExternalData, e))
	}
	kv("location", ext.Location)
	kv("offset", strconv.FormatInt(ext.Offset, 10))
	if ext.Length >= 0 {
		kv("length", strconv.FormatInt(ext.Length, 10))
	}
	if ext.Checksum != "" {
		kv("checksum", ext.Checksum)
	}
	t.Append(VarintField(TensorDataLocation, DataLocationExternal))
}

// SetRawData drops every data field (inline or external) and stores b as
// raw_data. b is not copied.
func (t *Tensor) SetRawData(b []byte) {
	t.Remove(dataFields...)
	t.Append(BytesField(TensorRawData, b))
}

// Open returns a reader over the tensor's little-endian bytes and their
// size. Inline data is served from memory; external data is a section of
// its file, read by offset (so multi-GB tensors are streamed). The file is
// opened with OpenInDir(baseDir, location): it must be a regular file
// inside baseDir after symbolic links are followed (errors wrap
// ErrEscapesModelDir or ErrNotRegularFile otherwise). The caller must call
// close.
func (t *Tensor) Open(baseDir string) (r io.Reader, size int64, closeFn func() error, err error) {
	nb, err := t.NumBytes()
	if err != nil {
		return nil, 0, nil, err
	}
	ext, isExt, err := t.External()
	if err != nil {
		return nil, 0, nil, err
	}
	if !isExt {
		b, err := t.inlineData(nb)
		if err != nil {
			return nil, 0, nil, err
		}
		return bytes.NewReader(b), nb, func() error { return nil }, nil
	}
	if ext.Length >= 0 && ext.Length != nb {
		return nil, 0, nil, fmt.Errorf("onnxwire: tensor %q: external length %d, want %d bytes for %v %v", t.Name(), ext.Length, nb, t.DType(), dimsOrNil(t))
	}
	f, err := OpenInDir(baseDir, ext.Location)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("onnxwire: tensor %q external data: %w", t.Name(), err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, nil, fmt.Errorf("onnxwire: tensor %q external data: %w", t.Name(), err)
	}
	if ext.Offset > st.Size() || nb > st.Size()-ext.Offset {
		f.Close()
		return nil, 0, nil, fmt.Errorf("onnxwire: tensor %q: external data %s[%d:+%d] is beyond the end of the file (%d bytes)", t.Name(), ext.Location, ext.Offset, nb, st.Size())
	}
	return io.NewSectionReader(f, ext.Offset, nb), nb, f.Close, nil
}

// dimsOrNil returns t's dims for error messages: nil when they cannot be
// read (the message is about something else).
func dimsOrNil(t *Tensor) []int64 { d, _ := t.Dims(); return d }

// Data returns the tensor's little-endian bytes. Inline raw_data is
// returned without copying; typed fields (float_data, int32_data, ...) are
// decoded into a new slice; external data is read from its file (see
// Open).
func (t *Tensor) Data(baseDir string) ([]byte, error) {
	if !t.IsExternal() {
		nb, err := t.NumBytes()
		if err != nil {
			return nil, err
		}
		return t.inlineData(nb)
	}
	r, size, closeFn, err := t.Open(baseDir)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	if size > math.MaxInt {
		return nil, fmt.Errorf("onnxwire: tensor %q: %d bytes do not fit in memory", t.Name(), size)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("onnxwire: tensor %q external data: %w", t.Name(), err)
	}
	return b, nil
}

// errNoData is returned for a tensor with elements but no data field.
var errNoData = errors.New("no data")

func (t *Tensor) inlineData(nb int64) ([]byte, error) {
	if t.Has(TensorSegment) {
		return nil, fmt.Errorf("onnxwire: tensor %q: segmented tensors are not supported", t.Name())
	}
	dt := t.DType()
	if f := t.Get(TensorRawData); f != nil {
		b := f.Bytes()
		if int64(len(b)) != nb {
			return nil, fmt.Errorf("onnxwire: tensor %q: raw_data has %d bytes, want %d for %v %v", t.Name(), len(b), nb, dt, dimsOrNil(t))
		}
		return b, nil
	}
	// Refuse a shape the data fields cannot possibly fill before
	// allocating for it: every value takes at least one input byte and
	// gives at most 8 output bytes.
	var avail int64
	for _, f := range t.fields {
		switch f.Num {
		case TensorFloatData, TensorInt32Data, TensorInt64Data, TensorDoubleData, TensorUint64Data:
			avail += int64(len(f.val))
		}
	}
	if avail == 0 && nb > 0 {
		return nil, fmt.Errorf("onnxwire: tensor %q: %w, want %d bytes for %v %v", t.Name(), errNoData, nb, dt, dimsOrNil(t))
	}
	if nb/8 > avail {
		return nil, fmt.Errorf("onnxwire: tensor %q: %w: %d bytes of data fields cannot hold the %d bytes of %v %v", t.Name(), ErrMalformed, avail, nb, dt, dimsOrNil(t))
	}
	out := make([]byte, 0, nb)
	var err error
	switch dt {
	case tensor.Float32:
		out, err = t.fixed(TensorFloatData, 4, out)
	case tensor.Float64:
		out, err = t.fixed(TensorDoubleData, 8, out)
	case tensor.Int64:
		out, err = t.varints(TensorInt64Data, 8, out)
	case tensor.Uint32:
		out, err = t.varints(TensorUint64Data, 4, out)
	case tensor.Uint64:
		out, err = t.varints(TensorUint64Data, 8, out)
	case tensor.Int32:
		out, err = t.varints(TensorInt32Data, 4, out)
	case tensor.Float16, tensor.BFloat16, tensor.Int16, tensor.Uint16:
		out, err = t.varints(TensorInt32Data, 2, out)
	case tensor.Int8, tensor.Uint8, tensor.Bool:
		out, err = t.varints(TensorInt32Data, 1, out)
	default:
		return nil, fmt.Errorf("onnxwire: tensor %q: cannot read %v data", t.Name(), dt)
	}
	if err != nil {
		return nil, fmt.Errorf("onnxwire: tensor %q: %w", t.Name(), err)
	}
	if int64(len(out)) != nb {
		if len(out) == 0 {
			err = errNoData
		} else {
			err = fmt.Errorf("%d bytes of data", len(out))
		}
		return nil, fmt.Errorf("onnxwire: tensor %q: %w, want %d bytes for %v %v", t.Name(), err, nb, dt, dimsOrNil(t))
	}
	return out, nil
}

// fixed appends the little-endian values of a packed or unpacked
// fixed32/fixed64 repeated field.
func (t *Tensor) fixed(num protowire.Number, size int, out []byte) ([]byte, error) {
	for _, f := range t.fields {
		if f.Num != num {
			continue
		}
		switch {
		case f.Type == protowire.BytesType && len(f.val)%size == 0:
			out = append(out, f.val...) // packed: already little-endian
		case size == 4 && f.Type == protowire.Fixed32Type, size == 8 && f.Type == protowire.Fixed64Type:
			out = append(out, f.val...)
		default:
			return nil, fmt.Errorf("%w: field %d has wire type %d", ErrMalformed, num, f.Type)
		}
	}
	return out, nil
}

// varints appends the varint values of a packed or unpacked repeated field,
// truncated to size little-endian bytes each.
func (t *Tensor) varints(num protowire.Number, size int, out []byte) ([]byte, error) {
	var tmp [8]byte
	put := func(v uint64) {
		binary.LittleEndian.PutUint64(tmp[:], v)
		out = append(out, tmp[:size]...)
	}
	for _, f := range t.fields {
		if f.Num != num {
			continue
		}
		switch f.Type {
		case protowire.VarintType:
			v, _ := protowire.ConsumeVarint(f.val)
			put(v)
		case protowire.BytesType:
			b := f.val
			for len(b) > 0 {
				v, n := protowire.ConsumeVarint(b)
				if n < 0 {
					return nil, fmt.Errorf("%w: packed field %d: %v", ErrMalformed, num, protowire.ParseError(n))
				}
				put(v)
				b = b[n:]
			}
		default:
			return nil, fmt.Errorf("%w: field %d has wire type %d", ErrMalformed, num, f.Type)
		}
	}
	return out, nil
}

// NewTensor builds a TensorProto with inline raw_data (not copied).
func NewTensor(name string, dtype tensor.DType, dims []int64, raw []byte) *Tensor {
	m := &Message{}
	for _, d := range dims {
		m.Append(VarintField(TensorDims, uint64(d)))
	}
	m.Append(VarintField(TensorDataType, uint64(dtype)))
	m.Append(StringField(TensorName, name))
	m.Append(BytesField(TensorRawData, raw))
	return &Tensor{m}
}
