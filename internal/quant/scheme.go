package quant

import (
	"errors"
	"fmt"
	"math"
	"math/bits"

	"github.com/shira-ort/shira-ort/tensor"
)

// Kind is a storage form of quantized codes.
type Kind uint8

// The storage forms a Scheme can describe.
const (
	// KindQDQ is an integer initializer read by ONNX DequantizeLinear.
	KindQDQ Kind = iota + 1
	// KindNBits is the packed B input of com.microsoft.MatMulNBits.
	KindNBits
)

// String returns "qdq" or "nbits".
func (k Kind) String() string {
	switch k {
	case KindQDQ:
		return "qdq"
	case KindNBits:
		return "nbits"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// ErrInvalid is wrapped by every error Validate (and so every constructor)
// returns.
var ErrInvalid = errors.New("quant: invalid scheme")

// layout is how codes are stored, chosen by Validate.
type layout uint8

const (
	layInt8 layout = iota + 1
	layUint8
	layInt16
	layUint16
	layNBits
)

// Scheme describes one quantized weight: where each logical element's code
// lives, and its scale and zero point. Fill the exported fields (or use
// NewQDQ, NewNBits, NewNBitsFloatZP) and call Validate, which checks them
// and prepares the derived values every other method needs; call it again
// after changing a field. A validated Scheme is read-only and safe for
// concurrent use (on disjoint raw bytes for the writing methods).
type Scheme struct {
	// Kind is the storage form.
	Kind Kind
	// CodeType is the QDQ code type: tensor.Int8, Uint8, Int16 or Uint16.
	// Validate sets it to tensor.Uint8 (the container) for KindNBits.
	CodeType tensor.DType
	// Bits is the code width: 2, 4 or 8 for KindNBits. Validate sets it
	// to 8·CodeType.Size() for KindQDQ.
	Bits int
	// Shape is the code initializer's shape for KindQDQ, and the logical
	// [K, N] for KindNBits.
	Shape []int64
	// Axis is the quantized axis of a per-axis QDQ scheme (len(Scales) > 1),
	// negative counting from the end; ignored when len(Scales) == 1 (per
	// tensor), as in ORT. ONNX's default is 1.
	Axis int
	// BlockSize is the MatMulNBits block_size (power of two, >= 16).
	BlockSize int
	// Scales holds one scale per parameter group: 1 (per tensor) or
	// Shape[Axis] for KindQDQ; N·k_blocks, index n·k_blocks + kb, for
	// KindNBits. Finite and non-zero.
	Scales []float32
	// ZeroPoints, if not nil, holds one integer zero point per scale,
	// within the code range. Nil means 0 for KindQDQ and 2^(Bits−1) for
	// KindNBits.
	ZeroPoints []int32
	// FloatZeroPoints, KindNBits only, holds float zero points (the
	// unpacked form, zero_points of the scales' type) instead of
	// ZeroPoints. At most one of the two may be set.
	FloatZeroPoints []float32
	// Rounding is how Quantize rounds: RoundNearestEven (the zero value,
	// ONNX QuantizeLinear's) or RoundStochastic.
	Rounding Rounding
	// LogicalRows, KindNBits only, is for a storage whose rows (along K)
	// are a permutation of the logical ones (a prepacked copy of B seen
	// as MatMulNBits storage): LogicalRows[r] is the logical row that
	// storage row r holds, nil for the identity. RoundStochastic dithers
	// by the logical index, so the permuted storage gets the codes the
	// logical one would.
	LogicalRows []int32
	// Columns, 8-bit QDQ only, is for codes stored in ONNX Runtime's
	// packed QGEMM order (a prepacked copy of a [K, N] weight's codes):
	// Shape is then the packed codes' byte count, Scales (and zero points)
	// one per tensor or one per column n, whose parameter element i uses
	// is the column Columns finds at storage offset i (Axis is ignored).
	Columns *PackedColumns

	ready    bool
	lay      layout
	numel    int
	rawLen   int
	qmin     int32
	qmax     int32
	mask     int32   // NBits: 2^Bits − 1
	zpi      []int32 // integer zero points, one per scale (default filled), nil if float
	inner    int     // QDQ per axis: product of Shape after the axis; 0 per tensor
	dim      int     // QDQ per axis: Shape[axis]
	axis     int     // normalized axis (QDQ per axis), -1 per tensor
	esize    int     // QDQ: bytes per code
	n        int     // NBits: N
	kBlocks  int     // NBits
	blobSize int     // NBits
	bsLog    uint    // NBits: log2(BlockSize)
}

// NewQDQ returns a validated QDQ scheme for codes of codeType (tensor.Int8,
// Uint8, Int16, Uint16) with the initializer's shape. scales has one entry
// (per tensor; axis ignored) or shape[axis] entries (per axis). zeroPoints
// is the raw little-endian zero-point tensor in codeType with as many
// elements as scales, or nil for 0.
func NewQDQ(codeType tensor.DType, shape []int64, axis int, scales []float32, zeroPoints []byte) (*Scheme, error) {
	s := &Scheme{Kind: KindQDQ, CodeType: codeType, Shape: append([]int64(nil), shape...), Axis: axis, Scales: scales}
	if zeroPoints != nil {
		sz := codeType.Size()
		if !isQDQType(codeType) {
			return nil, fmt.Errorf("%w: code type %v is not int8, uint8, int16 or uint16", ErrInvalid, codeType)
		}
		if len(zeroPoints) != len(scales)*sz {
			return nil, fmt.Errorf("%w: %d zero-point bytes for %d scales of %v", ErrInvalid, len(zeroPoints), len(scales), codeType)
		}
		s.ZeroPoints = make([]int32, len(scales))
		for p := range s.ZeroPoints {
			s.ZeroPoints[p] = decodeQDQ(codeType, zeroPoints[p*sz:])
		}
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// NewNBits returns a validated MatMulNBits scheme (attributes K, N, bits,
// block_size) with float32 scales [N·k_blocks] and optional packed uint8
// zero points as stored in the model: N·ceil(k_blocks·bits/8) bytes, per
// column n the k_blocks zero points low bits first, padded to a whole byte.
// packedZeroPoints nil means the default 2^(bits−1).
func NewNBits(k, n, bits, blockSize int, scales []float32, packedZeroPoints []byte) (*Scheme, error) {
	s := &Scheme{Kind: KindNBits, Bits: bits, Shape: []int64{int64(k), int64(n)}, BlockSize: blockSize, Scales: scales}
	if packedZeroPoints != nil {
		if !validNBits(bits) || blockSize <= 0 || k <= 0 || n <= 0 {
			return nil, fmt.Errorf("%w: nbits K=%d N=%d bits=%d block_size=%d", ErrInvalid, k, n, bits, blockSize)
		}
		zp, err := UnpackNBitsZeroPoints(packedZeroPoints, n, ceilDiv(k, blockSize), bits)
		if err != nil {
			return nil, err
		}
		s.ZeroPoints = zp
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// NewNBitsFloatZP is NewNBits with unpacked float zero points (the
// zero_points input in the scales' float type, widened to float32), one
// per scale.
func NewNBitsFloatZP(k, n, bits, blockSize int, scales, zeroPoints []float32) (*Scheme, error) {
	if zeroPoints == nil {
		return nil, fmt.Errorf("%w: nil float zero points (use NewNBits)", ErrInvalid)
	}
	s := &Scheme{Kind: KindNBits, Bits: bits, Shape: []int64{int64(k), int64(n)}, BlockSize: blockSize, Scales: scales, FloatZeroPoints: zeroPoints}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// Validate checks s and prepares it for use. Errors wrap ErrInvalid and
// name the offending field (and index): unknown kind or code type, bad
// shape, axis out of [-rank, rank), bits not 2/4/8, block size not a power
// of two >= 16, wrong number of scales or zero points, a scale that is 0,
// NaN or ±Inf, a zero point outside the code range (or non-finite), or
// both zero-point forms set.
func (s *Scheme) Validate() error {
	s.ready = false
	if !s.Rounding.Valid() {
		return fmt.Errorf("%w: %v", ErrInvalid, s.Rounding)
	}
	var err error
	switch s.Kind {
	case KindQDQ:
		err = s.validateQDQ()
	case KindNBits:
		err = s.validateNBits()
	default:
		err = fmt.Errorf("%w: unknown kind %v", ErrInvalid, s.Kind)
	}
	if err != nil {
		return err
	}
	for p, sc := range s.Scales {
		if sc == 0 || math.IsNaN(float64(sc)) || math.IsInf(float64(sc), 0) {
			return fmt.Errorf("%w: scale[%d] = %v (must be finite and non-zero)", ErrInvalid, p, sc)
		}
	}
	if s.ZeroPoints != nil && s.FloatZeroPoints != nil {
		return fmt.Errorf("%w: both ZeroPoints and FloatZeroPoints set", ErrInvalid)
	}
	s.zpi = nil
	switch {
	case s.FloatZeroPoints != nil:
		if s.Kind != KindNBits {
			return fmt.Errorf("%w: float zero points are for MatMulNBits only", ErrInvalid)
		}
		if len(s.FloatZeroPoints) != len(s.Scales) {
			return fmt.Errorf("%w: %d float zero points for %d scales", ErrInvalid, len(s.FloatZeroPoints), len(s.Scales))
		}
		for p, z := range s.FloatZeroPoints {
			if math.IsNaN(float64(z)) || math.IsInf(float64(z), 0) {
				return fmt.Errorf("%w: float zero point[%d] = %v", ErrInvalid, p, z)
			}
		}
	case s.ZeroPoints != nil:
		if len(s.ZeroPoints) != len(s.Scales) {
			return fmt.Errorf("%w: %d zero points for %d scales", ErrInvalid, len(s.ZeroPoints), len(s.Scales))
		}
		for p, z := range s.ZeroPoints {
			if z < s.qmin || z > s.qmax {
				return fmt.Errorf("%w: zero point[%d] = %d outside [%d, %d]", ErrInvalid, p, z, s.qmin, s.qmax)
			}
		}
		s.zpi = s.ZeroPoints
	default:
		var def int32
		if s.Kind == KindNBits {
			def = 1 << (s.Bits - 1)
		}
		s.zpi = make([]int32, len(s.Scales))
		for p := range s.zpi {
			s.zpi[p] = def
		}
	}
	s.ready = true
	return nil
}

func (s *Scheme) validateQDQ() error {
	if s.LogicalRows != nil {
		return fmt.Errorf("%w: LogicalRows is for MatMulNBits schemes", ErrInvalid)
	}
	if !isQDQType(s.CodeType) {
		return fmt.Errorf("%w: code type %v is not int8, uint8, int16 or uint16", ErrInvalid, s.CodeType)
	}
	n, err := tensor.NumElements(s.Shape)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if n > math.MaxUint32+1 {
		return fmt.Errorf("%w: %d elements do not fit uint32 indices", ErrInvalid, n)
	}
	s.esize = s.CodeType.Size()
	s.Bits = 8 * s.esize
	s.numel, s.rawLen = n, n*s.esize
	switch s.CodeType {
	case tensor.Int8:
		s.lay, s.qmin, s.qmax = layInt8, math.MinInt8, math.MaxInt8
	case tensor.Uint8:
		s.lay, s.qmin, s.qmax = layUint8, 0, math.MaxUint8
	case tensor.Int16:
		s.lay, s.qmin, s.qmax = layInt16, math.MinInt16, math.MaxInt16
	case tensor.Uint16:
		s.lay, s.qmin, s.qmax = layUint16, 0, math.MaxUint16
	}
	s.inner, s.dim, s.axis = 0, 1, -1
	if c := s.Columns; c != nil {
		if err := c.validate(); err != nil {
			return err
		}
		if len(s.Shape) != 1 || int(s.Shape[0]) != c.Bytes() || len(s.Scales) != c.N && len(s.Scales) != 1 || s.esize != 1 {
			return fmt.Errorf("%w: packed columns need 1-byte codes of shape [%d] and 1 or %d scales, have %v %v and %d", ErrInvalid, c.Bytes(), c.N, s.CodeType, s.Shape, len(s.Scales))
		}
		s.dim = len(s.Scales)
		return nil
	}
	switch {
	case len(s.Scales) == 0:
		return fmt.Errorf("%w: no scales", ErrInvalid)
	case len(s.Scales) == 1: // per tensor, axis ignored (ORT: IsScalarOr1ElementVector)
	default:
		r := len(s.Shape)
		a := s.Axis
		if a < -r || a >= r {
			return fmt.Errorf("%w: axis %d out of range for rank %d", ErrInvalid, s.Axis, r)
		}
		if a < 0 {
			a += r
		}
		if int64(len(s.Scales)) != s.Shape[a] {
			return fmt.Errorf("%w: %d scales for per-axis quantization of axis %d of %v (want %d)", ErrInvalid, len(s.Scales), a, s.Shape, s.Shape[a])
		}
		inner := 1
		for _, d := range s.Shape[a+1:] {
			inner *= int(d)
		}
		s.axis, s.dim, s.inner = a, int(s.Shape[a]), inner
	}
	return nil
}

func (s *Scheme) validateNBits() error {
	if len(s.Shape) != 2 {
		return fmt.Errorf("%w: nbits shape %v is not [K, N]", ErrInvalid, s.Shape)
	}
	k, n := s.Shape[0], s.Shape[1]
	if k <= 0 || n <= 0 {
		return fmt.Errorf("%w: nbits K=%d N=%d must be positive", ErrInvalid, k, n)
	}
	if !validNBits(s.Bits) {
		return fmt.Errorf("%w: bits %d (MatMulNBits supports 2, 4, 8)", ErrInvalid, s.Bits)
	}
	if s.BlockSize < 16 || s.BlockSize&(s.BlockSize-1) != 0 {
		return fmt.Errorf("%w: block_size %d must be a power of 2 >= 16", ErrInvalid, s.BlockSize)
	}
	numel, err := tensor.NumElements(s.Shape)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if numel > math.MaxUint32+1 {
		return fmt.Errorf("%w: %d elements do not fit uint32 indices", ErrInvalid, numel)
	}
	kb := ceilDiv(int(k), s.BlockSize)
	blob := s.BlockSize * s.Bits / 8
	if int64(n)*int64(kb)*int64(blob) > math.MaxInt {
		return fmt.Errorf("%w: nbits storage overflows", ErrInvalid)
	}
	if len(s.Scales) != int(n)*kb {
		return fmt.Errorf("%w: %d scales for N=%d × k_blocks=%d", ErrInvalid, len(s.Scales), n, kb)
	}
	if s.LogicalRows != nil {
		if len(s.LogicalRows) != int(k) {
			return fmt.Errorf("%w: %d logical rows for K=%d", ErrInvalid, len(s.LogicalRows), k)
		}
		for _, r := range s.LogicalRows {
			if r < 0 || int64(r) >= k {
				return fmt.Errorf("%w: logical row %d out of [0, %d)", ErrInvalid, r, k)
			}
		}
	}
	s.CodeType = tensor.Uint8
	s.lay = layNBits
	s.numel = numel
	s.n, s.kBlocks, s.blobSize = int(n), kb, blob
	s.rawLen = s.n * kb * blob
	s.bsLog = uint(bits.TrailingZeros(uint(s.BlockSize)))
	s.mask = 1<<s.Bits - 1
	s.qmin, s.qmax = 0, s.mask
	s.inner, s.dim, s.axis, s.esize = 0, 1, -1, 0
	return nil
}

func isQDQType(d tensor.DType) bool {
	return d == tensor.Int8 || d == tensor.Uint8 || d == tensor.Int16 || d == tensor.Uint16
}

func validNBits(b int) bool { return b == 2 || b == 4 || b == 8 }

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// decodeQDQ reads one little-endian code of d from b.
func decodeQDQ(d tensor.DType, b []byte) int32 {
	switch d {
	case tensor.Int8:
		return int32(int8(b[0]))
	case tensor.Uint8:
		return int32(b[0])
	case tensor.Int16:
		return int32(int16(uint16(b[0]) | uint16(b[1])<<8))
	default: // Uint16
		return int32(uint16(b[0]) | uint16(b[1])<<8)
	}
}

func (s *Scheme) mustReady() {
	if !s.ready {
		panic("quant: Scheme used before a successful Validate")
	}
}

// NumElements returns the number of logical elements (the product of
// Shape: K·N for MatMulNBits).
func (s *Scheme) NumElements() int { s.mustReady(); return s.numel }

// RawLen returns the number of bytes of the code storage: the QDQ
// initializer's bytes, or N·k_blocks·blob_size for MatMulNBits (the
// padding codes of a partial last block included).
func (s *Scheme) RawLen() int { s.mustReady(); return s.rawLen }

// CodeRange returns the smallest and largest code.
func (s *Scheme) CodeRange() (lo, hi int32) { s.mustReady(); return s.qmin, s.qmax }

// NormalizedAxis returns the quantized axis in [0, rank) for a per-axis
// QDQ scheme, and -1 for a per-tensor QDQ or a MatMulNBits scheme.
func (s *Scheme) NormalizedAxis() int { s.mustReady(); return s.axis }

// KBlocks returns k_blocks = ceil(K/block_size) of a MatMulNBits scheme
// (0 for QDQ).
func (s *Scheme) KBlocks() int { s.mustReady(); return s.kBlocks }

// Param returns the index into Scales (and zero points) used by logical
// element i: 0 per tensor; (i / inner) mod Shape[axis] per axis;
// n·k_blocks + k/block_size for MatMulNBits element (k, n), i = k·N + n.
func (s *Scheme) Param(i int) int {
	s.mustReady()
	s.checkIndex(i)
	p, _, _ := s.loc(i)
	return p
}

// ByteRange returns the bytes of the storage that hold element i's code:
// raw[off:off+n]. For QDQ they are the element's own Size() bytes; for
// MatMulNBits it is the single byte holding the code, which for bits < 8
// it shares with 8/bits − 1 neighbouring codes (callers saving whole bytes
// must save each byte once, before the first write to any of its codes).
func (s *Scheme) ByteRange(i int) (off, n int) {
	s.mustReady()
	s.checkIndex(i)
	_, off, _ = s.loc(i)
	if s.lay == layNBits {
		return off, 1
	}
	return off, s.esize
}

func (s *Scheme) checkIndex(i int) {
	if uint(i) >= uint(s.numel) {
		panic(fmt.Sprintf("quant: element %d out of range [0, %d)", i, s.numel))
	}
}

// loc returns element i's parameter index, byte offset and bit shift.
func (s *Scheme) loc(i int) (p, off int, shift uint) {
	if s.lay == layNBits {
		k := i / s.n
		col := i - k*s.n
		p = col*s.kBlocks + k>>s.bsLog
		bit := (k & (s.BlockSize - 1)) * s.Bits
		return p, p*s.blobSize + bit>>3, uint(bit & 7)
	}
	switch {
	case s.Columns != nil && s.dim > 1:
		p = s.Columns.Column(i)
	case s.inner != 0:
		p = (i / s.inner) % s.dim
	}
	return p, i * s.esize, 0
}

// get reads the code at off/shift.
func (s *Scheme) get(raw []byte, off int, shift uint) int32 {
	switch s.lay {
	case layInt8:
		return int32(int8(raw[off]))
	case layUint8:
		return int32(raw[off])
	case layInt16:
		b := raw[off : off+2]
		return int32(int16(uint16(b[0]) | uint16(b[1])<<8))
	case layUint16:
		b := raw[off : off+2]
		return int32(uint16(b[0]) | uint16(b[1])<<8)
	default:
		return int32(raw[off]>>shift) & s.mask
	}
}

// put writes code q (already in range) at off/shift, leaving other bits.
func (s *Scheme) put(raw []byte, off int, shift uint, q int32) {
	switch s.lay {
	case layInt8, layUint8:
		raw[off] = byte(q)
	case layInt16, layUint16:
		b := raw[off : off+2]
		b[0], b[1] = byte(q), byte(q>>8)
	default:
		m := byte(s.mask) << shift
		raw[off] = raw[off]&^m | byte(q)<<shift
	}
}

// Code returns the code of logical element i in raw (the code storage,
// RawLen bytes). It panics if i is out of range.
func (s *Scheme) Code(raw []byte, i int) int32 {
	s.mustReady()
	s.checkIndex(i)
	_, off, sh := s.loc(i)
	return s.get(raw, off, sh)
}

// SetCode stores code q for logical element i in raw, changing no other
// bits (a 2- or 4-bit code leaves the other codes of its byte alone). It
// panics if i or q is out of range.
func (s *Scheme) SetCode(raw []byte, i int, q int32) {
	s.mustReady()
	s.checkIndex(i)
	if q < s.qmin || q > s.qmax {
		panic(fmt.Sprintf("quant: code %d outside [%d, %d]", q, s.qmin, s.qmax))
	}
	_, off, sh := s.loc(i)
	s.put(raw, off, sh, q)
}

// Dequantize returns the float value of code q for logical element i:
// float32(q − zp)·scale (or (float32(q) − zp)·scale with float zero
// points). q need not be in range.
func (s *Scheme) Dequantize(i int, q int32) float32 {
	s.mustReady()
	s.checkIndex(i)
	p, _, _ := s.loc(i)
	return s.deq(p, q)
}

// Quantize returns the code for value v at logical element i, and whether
// it saturated (the rounded value lay outside the code range, or v is
// NaN, which gives the lowest code as in ORT).
func (s *Scheme) Quantize(i int, v float32) (q int32, clipped bool) {
	s.mustReady()
	s.checkIndex(i)
	p, _, _ := s.loc(i)
	return s.quant(s.DitherIndex(uint32(i)), p, v)
}

// DitherIndex returns the index RoundStochastic dithers element i by: i
// itself, or its logical index when LogicalRows permutes the rows or
// Columns packs the codes.
func (s *Scheme) DitherIndex(i uint32) uint32 {
	switch {
	case s.Columns != nil:
		k, n := s.Columns.Logical(int(i))
		return uint32(k*s.Columns.N + n)
	case s.LogicalRows == nil:
		return i
	}
	n := uint32(s.n)
	return uint32(s.LogicalRows[i/n])*n + i%n
}

func (s *Scheme) deq(p int, q int32) float32 {
	if s.zpi != nil {
		return float32(q-s.zpi[p]) * s.Scales[p]
	}
	return float32(float32(q)-s.FloatZeroPoints[p]) * s.Scales[p]
}

func (s *Scheme) quant(i uint32, p int, v float32) (int32, bool) {
	var r float64
	if s.zpi != nil {
		x := v / s.Scales[p]
		if x != x { // NaN: ORT's clamp (MAXPS / FMAXNM) yields the lower bound
			return s.qmin, true
		}
		r = s.Rounding.Round(i, float64(x)) + float64(s.zpi[p])
	} else {
		x := v / s.Scales[p]
		if x != x {
			return s.qmin, true
		}
		r = s.Rounding.Round(i, float64(x)+float64(s.FloatZeroPoints[p]))
	}
	if r < float64(s.qmin) {
		return s.qmin, true
	}
	if r > float64(s.qmax) {
		return s.qmax, true
	}
	return int32(r), false
}

// QDQLayout is the derived parameters of a validated QDQ scheme, for batch
// kernels that inline the per-element work (package patch): logical
// element i has parameter index 0 when Inner is 0 (per tensor), else
// (i / Inner) % Dim; its code occupies Esize bytes at i·Esize,
// little-endian, signed if Signed; Dequantize is
// float32(q − ZeroPoints[p])·Scales[p] and Quantize is Scheme.Quantize.
type QDQLayout struct {
	// Columns is the scheme's Columns (nil unless packed): the parameter
	// index of element i is then Columns.Column(i).
	Columns    *PackedColumns
	Scales     []float32
	ZeroPoints []int32
	Inner, Dim int
	Esize      int
	Signed     bool
	Qmin, Qmax int32
}

// QDQLayout returns the layout of a validated QDQ scheme; it panics for
// MatMulNBits. The slices are the scheme's own (read only).
func (s *Scheme) QDQLayout() QDQLayout {
	s.mustReady()
	if s.lay == layNBits {
		panic("quant: QDQLayout of a MatMulNBits scheme")
	}
	return QDQLayout{
		Columns: s.Columns, Scales: s.Scales, ZeroPoints: s.zpi, Inner: s.inner, Dim: s.dim, Esize: s.esize,
		Signed: s.lay == layInt8 || s.lay == layInt16, Qmin: s.qmin, Qmax: s.qmax,
	}
}

// NBitsLayout is the derived parameters of a validated MatMulNBits scheme,
// for batch kernels that inline the per-element work (package patch):
// logical element i = k·N + n has parameter index p = n·KBlocks +
// k/BlockSize, and its code is the Bits bits at bit (k mod BlockSize)·Bits
// of the blob of BlobSize bytes at byte p·BlobSize, low bits first.
// Dequantize is float32(q − ZeroPoints[p])·Scales[p], or, when ZeroPoints
// is nil, float32(float32(q) − FloatZeroPoints[p])·Scales[p]; Quantize is
// Scheme.Quantize, with codes in [0, Qmax].
type NBitsLayout struct {
	N, KBlocks      int
	BlockSize       int
	BlobSize        int
	Bits            int
	Scales          []float32
	ZeroPoints      []int32 // nil with float zero points
	FloatZeroPoints []float32
	Qmax            int32
}

// NBitsLayout returns the layout of a validated MatMulNBits scheme; it
// panics for QDQ. The slices are the scheme's own (read only).
func (s *Scheme) NBitsLayout() NBitsLayout {
	s.mustReady()
	if s.lay != layNBits {
		panic("quant: NBitsLayout of a QDQ scheme")
	}
	l := NBitsLayout{N: s.n, KBlocks: s.kBlocks, BlockSize: s.BlockSize, BlobSize: s.blobSize, Bits: s.Bits,
		Scales: s.Scales, Qmax: s.qmax}
	if s.zpi != nil {
		l.ZeroPoints = s.zpi
	} else {
		l.FloatZeroPoints = s.FloatZeroPoints
	}
	return l
}
