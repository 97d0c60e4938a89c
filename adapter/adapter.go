package adapter

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"unsafe"

	"github.com/shira-ort/shira-ort/tensor"
)

// FormatVersion is the .shira format version this package writes and the
// only one it reads. New index encodings (GapU16) did not change it: a
// reader refuses index encodings it does not know.
const FormatVersion = 1

// ErrInvalid is wrapped by every error about a malformed file or an
// inconsistent in-memory adapter.
var ErrInvalid = errors.New("adapter: invalid")

// ErrUnsupported is wrapped by errors about a well-formed file using a
// format version, index encoding or dtype this package does not know.
var ErrUnsupported = errors.New("adapter: unsupported")

// Semantics says how an adapter's values combine with the base weight b.
type Semantics uint8

const (
	// Overwrite is the SHiRA paper's scatter: w = v. With alpha != 1 or
	// fused with other adapters it acts as the delta v - b.
	Overwrite Semantics = 0
	// Delta is PEFT's additive form: w = b + alpha*v.
	Delta Semantics = 1
)

// String returns "overwrite" or "delta".
func (s Semantics) String() string {
	switch s {
	case Overwrite:
		return "overwrite"
	case Delta:
		return "delta"
	}
	return fmt.Sprintf("semantics(%d)", uint8(s))
}

// ParseSemantics accepts the names String returns (and "scatter" for
// Overwrite).
func ParseSemantics(s string) (Semantics, error) {
	switch s {
	case "overwrite", "scatter":
		return Overwrite, nil
	case "delta":
		return Delta, nil
	}
	return 0, fmt.Errorf("%w: unknown semantics %q (want overwrite or delta)", ErrInvalid, s)
}

func (s Semantics) valid() bool { return s == Overwrite || s == Delta }

// Adapter is one SHiRA adapter: sparse values for a set of weight tensors.
//
// An Adapter returned by [Decode] or [Open] aliases the buffer it was read
// from. One returned by Open aliases a memory mapping of the file, which
// [Adapter.Close] releases once nothing uses it any more: code that keeps
// using the adapter's slices (a patch.Patcher or an ort.Session with the
// adapter active) holds it with [Adapter.Retain], so closing an adapter in
// use never pulls memory from under it. Copies of an Adapter value share
// its mapping.
type Adapter struct {
	// Name is a free-form label ("style-a").
	Name string
	// DefaultAlpha is the scale suggested for this adapter (1 if unset).
	DefaultAlpha float32
	// Semantics applies to every tensor of the adapter.
	Semantics Semantics
	// ModelFingerprint is the hex fingerprint of the exported model the
	// adapter was made for (export.Manifest.Fingerprint); "" = unknown.
	ModelFingerprint string
	// Metadata holds free-form key/values (training recipe, base model, ...).
	Metadata map[string]string
	// Tensors lists the touched weights; names are unique.
	Tensors []Tensor

	m *mapping // set by Open
}

// Tensor is the sparse update of one weight tensor.
type Tensor struct {
	// Name is the target weight's name (initializer / graph input name).
	Name string
	// DType is the element type of the target weight: a float type, or the
	// integer codes of a quantized weight (tensor.DType.IsQuantCode), whose
	// adapter values are in the dequantized (float) domain and are
	// re-quantized by the patcher with the weight's scale and zero point.
	DType tensor.DType
	// ValueDType is the element type of Values: Float32, Float16 or
	// BFloat16; it may differ from DType (e.g. fp32 deltas for an fp16
	// weight). For a quantized weight it may also be DType itself: the
	// values are then the weight's codes (CodeValues), written as they
	// are, which only an Overwrite adapter may hold.
	ValueDType tensor.DType
	// Shape is the target weight's shape.
	Shape []int64
	// BaseSHA256 is the sha256 of the base weight's bytes the adapter was
	// made for; all zero means unknown (not checked).
	BaseSHA256 [32]byte
	// Indices are flat row-major indices into the weight, strictly
	// increasing, each < product(Shape).
	Indices []uint32
	// Values holds len(Indices) little-endian elements of ValueDType. Its
	// start must be aligned to the element size (Decode guarantees 8).
	Values []byte
}

// CodeValues reports whether t's values are codes of its quantized
// weight (ValueDType == DType, an integer code type) rather than floats.
func (t *Tensor) CodeValues() bool { return t.ValueDType == t.DType && t.DType.IsQuantCode() }

// Code returns value k of a tensor with CodeValues.
func (t *Tensor) Code(k int) int32 {
	switch t.ValueDType {
	case tensor.Int8:
		return int32(int8(t.Values[k]))
	case tensor.Uint8:
		return int32(t.Values[k])
	case tensor.Int16:
		return int32(int16(uint16(t.Values[2*k]) | uint16(t.Values[2*k+1])<<8))
	default: // Uint16
		return int32(uint16(t.Values[2*k]) | uint16(t.Values[2*k+1])<<8)
	}
}

// NewCodeTensor builds a tensor whose values are codes of the quantized
// weight name (dtype tensor.Int8, Uint8, Int16 or Uint16; for a
// MatMulNBits weight tensor.Uint8, one code per value), for an Overwrite
// adapter made for one quantized model: indices and codes are copied and
// sorted; a code must fit dtype (the patcher checks it against the
// weight's own code range).
func NewCodeTensor(name string, dtype tensor.DType, shape []int64, indices []uint32, codes []int32) (Tensor, error) {
	if len(indices) != len(codes) {
		return Tensor{}, fmt.Errorf("%w: tensor %q: %d indices but %d codes", ErrInvalid, name, len(indices), len(codes))
	}
	if !dtype.IsQuantCode() {
		return Tensor{}, fmt.Errorf("%w: tensor %q: dtype %v holds no codes (want int8, uint8, int16 or uint16)", ErrUnsupported, name, dtype)
	}
	t := Tensor{Name: name, DType: dtype, ValueDType: dtype, Shape: append([]int64(nil), shape...),
		Indices: append([]uint32(nil), indices...), Values: make([]byte, len(codes)*dtype.Size())}
	lo, hi := int32(math.MinInt16), int32(math.MaxUint16)
	switch dtype {
	case tensor.Int8:
		lo, hi = math.MinInt8, math.MaxInt8
	case tensor.Uint8:
		lo, hi = 0, math.MaxUint8
	case tensor.Int16:
		hi = math.MaxInt16
	case tensor.Uint16:
		lo = 0
	}
	for k, c := range codes {
		if c < lo || c > hi {
			return Tensor{}, fmt.Errorf("%w: tensor %q: code %d at index %d does not fit %v", ErrInvalid, name, c, indices[k], dtype)
		}
		if dtype.Size() == 1 {
			t.Values[k] = byte(c)
		} else {
			t.Values[2*k], t.Values[2*k+1] = byte(c), byte(c>>8)
		}
	}
	if err := t.Sort(); err != nil {
		return Tensor{}, err
	}
	return t, nil
}

// NNZ returns the number of touched entries of t.
func (t *Tensor) NNZ() int { return len(t.Indices) }

// HasBase reports whether t records the sha256 of its base weight.
func (t *Tensor) HasBase() bool { return t.BaseSHA256 != [32]byte{} }

// NumElements returns the number of elements of the target weight (0 when
// the shape is invalid).
func (t *Tensor) NumElements() int {
	n, err := tensor.NumElements(t.Shape)
	if err != nil {
		return 0
	}
	return n
}

// ValuesFloat32 decodes Values into a new []float32.
func (t *Tensor) ValuesFloat32() ([]float32, error) {
	vt, err := tensor.New(t.ValueDType, []int64{int64(len(t.Values) / max(1, t.ValueDType.Size()))}, t.Values)
	if err != nil {
		return nil, fmt.Errorf("adapter: tensor %q values: %w", t.Name, err)
	}
	return vt.AsFloat32()
}

// NNZ returns the number of touched entries over all tensors.
func (a *Adapter) NNZ() int {
	n := 0
	for i := range a.Tensors {
		n += a.Tensors[i].NNZ()
	}
	return n
}

// Tensor returns the tensor targeting name, or nil.
func (a *Adapter) Tensor(name string) *Tensor {
	for i := range a.Tensors {
		if a.Tensors[i].Name == name {
			return &a.Tensors[i]
		}
	}
	return nil
}

// NewTensor builds a tensor from float32 values, stored with value dtype
// valueDType (values are rounded to it). Indices and values are copied and
// sorted together by index; a duplicate index is an error.
func NewTensor(name string, dtype tensor.DType, shape []int64, indices []uint32, values []float32, valueDType tensor.DType) (Tensor, error) {
	if len(indices) != len(values) {
		return Tensor{}, fmt.Errorf("%w: tensor %q: %d indices but %d values", ErrInvalid, name, len(indices), len(values))
	}
	t := Tensor{Name: name, DType: dtype, ValueDType: valueDType, Shape: append([]int64(nil), shape...),
		Indices: append([]uint32(nil), indices...)}
	switch valueDType {
	case tensor.Float32:
		t.Values = append([]byte(nil), tensor.Bytes(values)...)
	case tensor.Float16:
		h := make([]uint16, len(values))
		tensor.Float32sToFloat16(h, values)
		t.Values = tensor.Bytes(h)
	case tensor.BFloat16:
		h := make([]uint16, len(values))
		for i, v := range values {
			h[i] = tensor.Float32ToBFloat16(v)
		}
		t.Values = tensor.Bytes(h)
	default:
		return Tensor{}, fmt.Errorf("%w: tensor %q: value dtype %v (want float32, float16 or bfloat16)", ErrUnsupported, name, valueDType)
	}
	if err := t.Sort(); err != nil {
		return Tensor{}, err
	}
	return t, nil
}

// Sort orders t's (index, value) pairs by index, in place, so builders may
// add entries in any order. A duplicate index is an error.
func (t *Tensor) Sort() error {
	es := t.ValueDType.Size()
	if es == 0 || len(t.Values) != len(t.Indices)*es {
		return fmt.Errorf("%w: tensor %q: %d values bytes for %d indices of %v", ErrInvalid, t.Name, len(t.Values), len(t.Indices), t.ValueDType)
	}
	if !sort.IsSorted(pairSorter{t, es}) {
		sort.Sort(pairSorter{t, es})
	}
	for i := 1; i < len(t.Indices); i++ {
		if t.Indices[i] == t.Indices[i-1] {
			return fmt.Errorf("%w: tensor %q: duplicate index %d", ErrInvalid, t.Name, t.Indices[i])
		}
	}
	return nil
}

type pairSorter struct {
	t  *Tensor
	es int
}

func (p pairSorter) Len() int           { return len(p.t.Indices) }
func (p pairSorter) Less(i, j int) bool { return p.t.Indices[i] < p.t.Indices[j] }
func (p pairSorter) Swap(i, j int) {
	ix := p.t.Indices
	ix[i], ix[j] = ix[j], ix[i]
	v, es := p.t.Values, p.es
	for b := 0; b < es; b++ {
		v[i*es+b], v[j*es+b] = v[j*es+b], v[i*es+b]
	}
}

// Sort orders the tensors by name and each tensor's entries by index
// (see [Tensor.Sort]), giving a canonical adapter for writing.
func (a *Adapter) Sort() error {
	sort.SliceStable(a.Tensors, func(i, j int) bool { return a.Tensors[i].Name < a.Tensors[j].Name })
	for i := range a.Tensors {
		if err := a.Tensors[i].Sort(); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks an adapter built in memory: known semantics, finite
// default alpha, unique non-empty tensor names, float weight and value
// dtypes (or a quantized weight's code dtype, with float values or, in an
// overwrite adapter only, codes), valid shapes, len(Values) == NNZ*ValueDType.Size(), values
// aligned, indices strictly increasing and in range, values finite (no
// NaN or infinity: ErrNonFinite). Errors wrap [ErrInvalid] or
// [ErrUnsupported] and name the tensor. (patch.Patcher checks each tensor
// with Tensor.Validate, which leaves the values to patch's finite check.)
func (a *Adapter) Validate() error {
	if !a.Semantics.valid() {
		return fmt.Errorf("%w: unknown semantics %d", ErrUnsupported, uint8(a.Semantics))
	}
	if f := float64(a.DefaultAlpha); math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("%w: default alpha %v is not finite", ErrInvalid, a.DefaultAlpha)
	}
	seen := make(map[string]struct{}, len(a.Tensors))
	for i := range a.Tensors {
		t := &a.Tensors[i]
		if _, dup := seen[t.Name]; dup {
			return fmt.Errorf("%w: duplicate tensor name %q", ErrInvalid, t.Name)
		}
		seen[t.Name] = struct{}{}
		if err := t.Validate(); err != nil {
			return err
		}
		if t.CodeValues() && a.Semantics != Overwrite {
			return fmt.Errorf("%w: tensor %q holds codes, which only an overwrite adapter may hold (semantics %v)", ErrUnsupported, t.Name, a.Semantics)
		}
		if k := t.firstNonFinite(); k >= 0 {
			return fmt.Errorf("%w: tensor %q: value %d (index %d) is not finite (NaN or infinite)", ErrNonFinite, t.Name, k, t.Indices[k])
		}
	}
	return nil
}

// ErrNonFinite is wrapped (together with ErrInvalid) by the error about an
// adapter value that is NaN or infinite: Adapter.Validate, and so Decode,
// Open and Encode, refuse such adapters.
var ErrNonFinite = fmt.Errorf("%w: non-finite value", ErrInvalid)

// firstNonFinite returns the position of the first NaN or infinite value
// of t, or -1. t must be valid (Tensor.Validate).
func (t *Tensor) firstNonFinite() int {
	switch t.ValueDType {
	case tensor.Float32:
		for k, b := range tensor.Uint32s(t.Values) {
			if b&0x7f800000 == 0x7f800000 {
				return k
			}
		}
	case tensor.Float16:
		for k, b := range tensor.Uint16s(t.Values) {
			if b&0x7c00 == 0x7c00 {
				return k
			}
		}
	case tensor.BFloat16:
		for k, b := range tensor.Uint16s(t.Values) {
			if b&0x7f80 == 0x7f80 {
				return k
			}
		}
	}
	return -1
}

// Validate checks one tensor (see [Adapter.Validate]).
func (t *Tensor) Validate() error {
	if t.Name == "" {
		return fmt.Errorf("%w: tensor with empty name", ErrInvalid)
	}
	if !t.DType.IsFloat() && !t.DType.IsQuantCode() {
		return fmt.Errorf("%w: tensor %q: weight dtype %v (want float32, float16, bfloat16, or the int8, uint8, int16 or uint16 codes of a quantized weight)", ErrUnsupported, t.Name, t.DType)
	}
	if !t.ValueDType.IsFloat() && !t.CodeValues() {
		return fmt.Errorf("%w: tensor %q: value dtype %v (want float32, float16, bfloat16, or the weight's own code type)", ErrUnsupported, t.Name, t.ValueDType)
	}
	numel, err := tensor.NumElements(t.Shape)
	if err != nil {
		return fmt.Errorf("%w: tensor %q: %w", ErrInvalid, t.Name, err)
	}
	es := t.ValueDType.Size()
	if len(t.Values) != len(t.Indices)*es {
		return fmt.Errorf("%w: tensor %q: %d bytes of %v values for %d indices (want %d)", ErrInvalid, t.Name, len(t.Values), t.ValueDType, len(t.Indices), len(t.Indices)*es)
	}
	if len(t.Values) > 0 && uintptr(unsafe.Pointer(unsafe.SliceData(t.Values)))%uintptr(es) != 0 {
		return fmt.Errorf("%w: tensor %q: values not aligned to %d bytes", ErrInvalid, t.Name, es)
	}
	if err := checkIndices(t.Indices, numel); err != nil {
		return fmt.Errorf("%w: tensor %q %v: %w", ErrInvalid, t.Name, t.Shape, err)
	}
	return nil
}

// checkIndices verifies strictly increasing indices below numel.
func checkIndices(ix []uint32, numel int) error {
	if len(ix) == 0 {
		return nil
	}
	prev := ix[0]
	for i := 1; i < len(ix); i++ {
		v := ix[i]
		if v <= prev {
			return fmt.Errorf("indices not strictly increasing at position %d (%d after %d)", i, v, prev)
		}
		prev = v
	}
	if uint64(prev) >= uint64(numel) {
		return fmt.Errorf("index %d out of range for %d elements", prev, numel)
	}
	return nil
}
