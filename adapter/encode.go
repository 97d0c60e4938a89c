package adapter

import (
	"fmt"
	"sort"

	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/shira-ort/shira-ort/adapter/internal/shirafb"
	"github.com/shira-ort/shira-ort/internal/atomicfile"
)

// fileIdentifier is the FlatBuffers file identifier of .shira files.
const fileIdentifier = "SHRA"

// maxFileSize is the largest file a FlatBuffer (32-bit offsets, Go builder
// limit) can hold.
const maxFileSize = 1<<31 - 1

// EncodeOptions configures EncodeWith and WriteWith.
type EncodeOptions struct {
	// Index is the index encoding of every tensor.
	Index IndexEncoding
}

// Encode validates a and serialises it as a .shira FlatBuffer with the
// DefaultIndexEncoding (see [EncodeWith]).
func Encode(a *Adapter) ([]byte, error) {
	return EncodeWith(a, EncodeOptions{Index: DefaultIndexEncoding})
}

// EncodeWith validates a and serialises it as a .shira FlatBuffer with the
// given options. Every tensor's values start at an 8-byte aligned offset,
// and the returned slice itself starts 8-byte aligned, so Decode of the
// result does not copy values (nor FlatU32 indices).
func EncodeWith(a *Adapter, o EncodeOptions) (b []byte, err error) {
	if o.Index != FlatU32 && o.Index != GapU16 {
		return nil, fmt.Errorf("adapter: encode: %w: %v", ErrUnsupported, o.Index)
	}
	if err := a.Validate(); err != nil {
		return nil, fmt.Errorf("adapter: encode: %w", err)
	}
	est := estimateSize(a)
	if est > maxFileSize {
		return nil, fmt.Errorf("adapter: encode: %w: about %d bytes, more than a FlatBuffer can hold (2 GiB); split the adapter", ErrUnsupported, est)
	}
	defer func() { // the flatbuffers builder panics on misuse or overflow
		if r := recover(); r != nil {
			b, err = nil, fmt.Errorf("adapter: encode: flatbuffers: %v", r)
		}
	}()
	fb := flatbuffers.NewBuilder((est + 7) &^ 7)

	tensors := make([]flatbuffers.UOffsetT, len(a.Tensors))
	for i := range a.Tensors {
		tensors[i] = encodeTensor(fb, &a.Tensors[i], o.Index)
	}
	keys := make([]string, 0, len(a.Metadata))
	for k := range a.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	kvs := make([]flatbuffers.UOffsetT, len(keys))
	for i, k := range keys {
		ko, vo := fb.CreateString(k), fb.CreateString(a.Metadata[k])
		shirafb.KeyValueStart(fb)
		shirafb.KeyValueAddKey(fb, ko)
		shirafb.KeyValueAddValue(fb, vo)
		kvs[i] = shirafb.KeyValueEnd(fb)
	}
	tensorsVec := offsetVector(fb, tensors)
	metaVec := offsetVector(fb, kvs)
	name := fb.CreateString(a.Name)
	fp := fb.CreateString(a.ModelFingerprint)

	shirafb.AdapterStart(fb)
	shirafb.AdapterAddFormatVersion(fb, FormatVersion)
	shirafb.AdapterAddName(fb, name)
	shirafb.AdapterAddDefaultAlpha(fb, a.DefaultAlpha)
	shirafb.AdapterAddSemantics(fb, shirafb.Semantics(a.Semantics))
	shirafb.AdapterAddModelFingerprint(fb, fp)
	shirafb.AdapterAddMetadata(fb, metaVec)
	shirafb.AdapterAddTensors(fb, tensorsVec)
	root := shirafb.AdapterEnd(fb)
	fb.FinishWithFileIdentifier(root, []byte(fileIdentifier))

	out := fb.FinishedBytes()
	if !aligned(out, 8) { // keep the promise that values are 8-byte aligned in memory too
		c := alignedBytes(len(out))
		copy(c, out)
		out = c
	}
	return out, nil
}

func estimateSize(a *Adapter) int {
	n := 256 + len(a.Name) + len(a.ModelFingerprint)
	for k, v := range a.Metadata {
		n += 32 + len(k) + len(v)
	}
	for i := range a.Tensors {
		t := &a.Tensors[i]
		n += 160 + len(t.Name) + 8*len(t.Shape) + 4*len(t.Indices) + len(t.Values)
	}
	return n
}

func offsetVector(fb *flatbuffers.Builder, offs []flatbuffers.UOffsetT) flatbuffers.UOffsetT {
	fb.StartVector(4, len(offs), 4)
	for i := len(offs) - 1; i >= 0; i-- {
		fb.PrependUOffsetT(offs[i])
	}
	return fb.EndVector(len(offs))
}

func encodeTensor(fb *flatbuffers.Builder, t *Tensor, enc IndexEncoding) flatbuffers.UOffsetT {
	// Values first (the builder writes back to front): 8-byte aligned data.
	fb.Prep(8, len(t.Values))
	values := fb.CreateByteVector(t.Values)

	var indices, gaps flatbuffers.UOffsetT
	if enc == GapU16 {
		g := encodeGaps(make([]uint16, 0, gapCount(t.Indices)), t.Indices)
		fb.StartVector(2, len(g), 8)
		for i := len(g) - 1; i >= 0; i-- {
			fb.PlaceUint16(g[i])
		}
		gaps = fb.EndVector(len(g))
	} else {
		fb.StartVector(4, len(t.Indices), 8)
		for i := len(t.Indices) - 1; i >= 0; i-- {
			fb.PlaceUint32(t.Indices[i])
		}
		indices = fb.EndVector(len(t.Indices))
	}

	var base flatbuffers.UOffsetT
	if t.HasBase() {
		base = fb.CreateByteVector(t.BaseSHA256[:])
	}
	fb.StartVector(8, len(t.Shape), 8)
	for i := len(t.Shape) - 1; i >= 0; i-- {
		fb.PlaceInt64(t.Shape[i])
	}
	shape := fb.EndVector(len(t.Shape))
	name := fb.CreateString(t.Name)

	shirafb.TensorStart(fb)
	shirafb.TensorAddName(fb, name)
	shirafb.TensorAddShape(fb, shape)
	shirafb.TensorAddDtype(fb, int32(t.DType))
	shirafb.TensorAddValueDtype(fb, int32(t.ValueDType))
	if t.HasBase() {
		shirafb.TensorAddBaseSha256(fb, base)
	}
	if enc == GapU16 {
		shirafb.TensorAddIndexEncoding(fb, shirafb.IndexEncodingGapU16)
		shirafb.TensorAddIndexGaps(fb, gaps)
	} else {
		shirafb.TensorAddIndexEncoding(fb, shirafb.IndexEncodingFlatU32)
		shirafb.TensorAddIndices(fb, indices)
	}
	shirafb.TensorAddValues(fb, values)
	return shirafb.TensorEnd(fb)
}

// Write encodes a with the DefaultIndexEncoding and writes it to path
// atomically (see [WriteWith]).
func Write(path string, a *Adapter) error {
	return WriteWith(path, a, EncodeOptions{Index: DefaultIndexEncoding})
}

// WriteWith encodes a with o and writes it to path atomically through
// internal/atomicfile: a temporary file in the same directory, fsynced and
// renamed over path, then the directory fsynced. On error path is left
// untouched; a writer killed midway leaves a hidden temporary file that
// the next write of path removes.
func WriteWith(path string, a *Adapter, o EncodeOptions) error {
	b, err := EncodeWith(a, o)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, b); err != nil {
		return fmt.Errorf("adapter: %w", err)
	}
	return nil
}
