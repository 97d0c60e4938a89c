package export

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/internal/quant"
	"github.com/shira-ort/shira-ort/tensor"
)

// QuantForm names the quantized forms an exposed weight may have.
const (
	// QuantQDQ: the weight holds the integer codes q of an ONNX
	// DequantizeLinear whose output, (q − zero_point)·scale, is what the
	// consumers read.
	QuantQDQ = "qdq"
	// QuantNBits: the weight is the packed B input of ONNX Runtime's
	// MatMulNBits contrib op: 2-, 4- or 8-bit codes in blocks of
	// BlockSize along K, each block with its own scale and zero point.
	QuantNBits = "nbits"
)

// Quantization describes a quantized exposed weight (TensorEntry.Quant):
// its scales and zero points, so that the patcher can re-quantize adapter
// values with them. The exposed tensor holds the integer codes.
type Quantization struct {
	// Form is QuantQDQ or QuantNBits.
	Form string `json:"form"`
	// Node is the DequantizeLinear (QDQ) or MatMulNBits node reading the
	// codes.
	Node string `json:"node"`
	// Axis is DequantizeLinear's axis (ONNX's default 1 when the node has
	// none), meaningful when there is more than one scale.
	Axis int `json:"axis"`
	// Scales holds one scale (per tensor) or one per index of Axis.
	Scales []float32 `json:"scales"`
	// ZeroPoints holds the zero points, as many as Scales; empty: all 0.
	ZeroPoints []int32 `json:"zero_points,omitempty"`
	// ScaleName and ZeroPointName are the names of the scale and zero
	// point tensors in the graph ("" when there is no zero point).
	ScaleName     string `json:"scale_name"`
	ZeroPointName string `json:"zero_point_name,omitempty"`
	// K, N, Bits and BlockSize are MatMulNBits' attributes (QuantNBits
	// only): the weight is logically [K, N], as a MatMul weight, stored as
	// [N][ceil(K/BlockSize)][BlockSize·Bits/8] bytes; Scales and
	// ZeroPoints (unpacked) or FloatZeroPoints hold one value per column
	// and block, column-major ([N][blocks]).
	K               int       `json:"k,omitempty"`
	N               int       `json:"n,omitempty"`
	Bits            int       `json:"bits,omitempty"`
	BlockSize       int       `json:"block_size,omitempty"`
	FloatZeroPoints []float32 `json:"float_zero_points,omitempty"`
	// AccuracyLevel is MatMulNBits' accuracy_level: at 2 or more ORT may
	// compute a constant (prepacked) B at lower precision (4: int8), while
	// an overridable one is computed in float32 (see ort.Session.Caveats).
	AccuracyLevel int `json:"accuracy_level,omitempty"`
}

// Scheme returns the quantization scheme of a quantized entry (nil, nil
// for a float one): what package patch needs to re-quantize values.
func (e *TensorEntry) Scheme() (*quant.Scheme, error) {
	q := e.Quant
	if q == nil {
		return nil, nil
	}
	if q.Form == QuantNBits {
		return e.nbitsScheme()
	}
	if q.Form != QuantQDQ {
		return nil, fmt.Errorf("%w: tensor %q: quantization form %q", ErrManifest, e.Name, q.Form)
	}
	var zp []byte
	if len(q.ZeroPoints) > 0 {
		zp = make([]byte, len(q.ZeroPoints)*e.DType.Size())
		for i, z := range q.ZeroPoints {
			switch e.DType.Size() {
			case 1:
				zp[i] = byte(z)
			default:
				binary.LittleEndian.PutUint16(zp[2*i:], uint16(z))
			}
		}
	}
	s, err := quant.NewQDQ(e.DType, e.Shape, q.Axis, q.Scales, zp)
	if err != nil {
		return nil, fmt.Errorf("%w: tensor %q: %w", ErrManifest, e.Name, err)
	}
	return s, nil
}

// nbitsScheme is Scheme for a MatMulNBits weight, whose exposed shape is
// the stored [N, blocks, blob] bytes.
func (e *TensorEntry) nbitsScheme() (*quant.Scheme, error) {
	q := e.Quant
	if q.K <= 0 || q.N <= 0 || q.BlockSize <= 0 || q.Bits <= 0 {
		return nil, fmt.Errorf("%w: tensor %q: MatMulNBits K=%d N=%d bits=%d block_size=%d", ErrManifest, e.Name, q.K, q.N, q.Bits, q.BlockSize)
	}
	blocks := (q.K + q.BlockSize - 1) / q.BlockSize
	var s *quant.Scheme
	var err error
	switch {
	case len(q.FloatZeroPoints) > 0:
		s, err = quant.NewNBitsFloatZP(q.K, q.N, q.Bits, q.BlockSize, q.Scales, q.FloatZeroPoints)
	case len(q.ZeroPoints) > 0:
		var packed []byte
		if packed, err = quant.PackNBitsZeroPoints(q.ZeroPoints, q.N, blocks, q.Bits); err == nil {
			s, err = quant.NewNBits(q.K, q.N, q.Bits, q.BlockSize, q.Scales, packed)
		}
	default:
		s, err = quant.NewNBits(q.K, q.N, q.Bits, q.BlockSize, q.Scales, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: tensor %q: %w", ErrManifest, e.Name, err)
	}
	if int64(s.RawLen()) != e.Length || e.DType != tensor.Uint8 {
		return nil, fmt.Errorf("%w: tensor %q: %v of %d bytes, but MatMulNBits K=%d N=%d bits=%d block_size=%d stores %d bytes of uint8",
			ErrManifest, e.Name, e.DType, e.Length, q.K, q.N, q.Bits, q.BlockSize, s.RawLen())
	}
	return s, nil
}

// LogicalShape is the shape adapters index: the exposed shape, except for
// a MatMulNBits weight, whose elements are indexed as the [K, N] MatMul
// weight it stands for (element (k, n) at k·N + n), not as its packed
// bytes.
func (e *TensorEntry) LogicalShape() []int64 {
	if q := e.Quant; q != nil && q.Form == QuantNBits {
		return []int64{int64(q.K), int64(q.N)}
	}
	return e.Shape
}

// quantOf reads the quantization of a candidate reached through
// DequantizeLinear nodes: every path must go through one with the same
// scale, zero point and axis. ok is false (with a note) when they differ
// or the scale is not float32 constants.
func (ix *graphIndex) quantOf(c *candidate, srcDir string) (q *Quantization, note string, err error) {
	if len(c.paths) > 0 && isNBits(c.paths[0].consumer) {
		return ix.nbitsOf(c, srcDir)
	}
	var dq *onnxwire.Node
	for _, p := range c.paths {
		if len(p.chain) == 0 || p.chain[0].OpType() != "DequantizeLinear" {
			return nil, fmt.Sprintf("%s is read both through DequantizeLinear and directly", c.source), nil
		}
		n := p.chain[0]
		if dq == nil {
			dq = n
			continue
		}
		a0, err := dq.AttrInt("axis", 1)
		if err != nil {
			return nil, "", err
		}
		a1, err := n.AttrInt("axis", 1)
		if err != nil {
			return nil, "", err
		}
		if n != dq && (!sameInputs(n, dq) || a0 != a1) {
			return nil, fmt.Sprintf("%s is dequantized by nodes %q and %q with different scales, zero points or axes", c.source, dq.Name(), n.Name()), nil
		}
	}
	in := dq.Inputs()
	if len(in) < 2 || in[1] == "" {
		return nil, fmt.Sprintf("DequantizeLinear %q has no scale", dq.Name()), nil
	}
	if _, err := dq.Attr("block_size"); err == nil {
		if bs, _ := dq.AttrInt("block_size", 0); bs != 0 {
			return nil, fmt.Sprintf("DequantizeLinear %q is blocked (block_size %d): not supported", dq.Name(), bs), nil
		}
	}
	axis, err := dq.AttrInt("axis", 1)
	if err != nil {
		return nil, "", err
	}
	q = &Quantization{Form: QuantQDQ, Node: dq.Name(), Axis: int(axis), ScaleName: in[1]}
	st, _, err := ix.constantTensor(in[1])
	if err != nil {
		return nil, "", err
	}
	if st == nil || st.DType() != tensor.Float32 {
		return nil, fmt.Sprintf("the scale %q of DequantizeLinear %q is not a float32 constant", in[1], dq.Name()), nil
	}
	b, err := st.Data(srcDir)
	if err != nil {
		return nil, "", fmt.Errorf("export: %w", err)
	}
	q.Scales = float32s(b)
	if len(in) >= 3 && in[2] != "" {
		zt, _, err := ix.constantTensor(in[2])
		if err != nil {
			return nil, "", err
		}
		if zt == nil || zt.DType() != c.dtype {
			return nil, fmt.Sprintf("the zero point %q of DequantizeLinear %q is not a %v constant", in[2], dq.Name(), c.dtype), nil
		}
		zb, err := zt.Data(srcDir)
		if err != nil {
			return nil, "", fmt.Errorf("export: %w", err)
		}
		q.ZeroPointName = in[2]
		for i := 0; i < len(zb); i += c.dtype.Size() {
			switch c.dtype {
			case tensor.Int8:
				q.ZeroPoints = append(q.ZeroPoints, int32(int8(zb[i])))
			case tensor.Uint8:
				q.ZeroPoints = append(q.ZeroPoints, int32(zb[i]))
			case tensor.Int16:
				q.ZeroPoints = append(q.ZeroPoints, int32(int16(binary.LittleEndian.Uint16(zb[i:]))))
			case tensor.Uint16:
				q.ZeroPoints = append(q.ZeroPoints, int32(binary.LittleEndian.Uint16(zb[i:])))
			}
		}
	}
	// the scheme must be valid for the exposed codes
	e := &TensorEntry{Name: c.name, DType: c.dtype, Shape: c.exposedShape(), Quant: q}
	if _, err := e.Scheme(); err != nil {
		return nil, fmt.Sprintf("%s: %v", c.source, err), nil
	}
	return q, "", nil
}

// sameInputs reports whether two nodes read the same inputs.
func sameInputs(a, b *onnxwire.Node) bool {
	x, y := a.Inputs(), b.Inputs()
	if len(x) != len(y) {
		return false
	}
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}

// nbitsOf reads the quantization of a MatMulNBits B input: every path
// must be a MatMulNBits with the same attributes, scales and zero points.
func (ix *graphIndex) nbitsOf(c *candidate, srcDir string) (*Quantization, string, error) {
	n := c.paths[0].consumer
	for _, p := range c.paths[1:] {
		if !isNBits(p.consumer) || p.consumer != n && !sameInputs(p.consumer, n) {
			return nil, fmt.Sprintf("%s is read by MatMulNBits %q and by %q (%s) with other inputs", c.source, n.Name(), p.consumer.Name(), p.consumer.OpType()), nil
		}
	}
	attr := func(name string, def int64) (int, error) {
		v, err := n.AttrInt(name, def)
		return int(v), err
	}
	q := &Quantization{Form: QuantNBits, Node: n.Name()}
	var err error
	if q.K, err = attr("K", 0); err != nil {
		return nil, "", err
	}
	if q.N, err = attr("N", 0); err != nil {
		return nil, "", err
	}
	if q.Bits, err = attr("bits", 4); err != nil {
		return nil, "", err
	}
	if q.BlockSize, err = attr("block_size", 0); err != nil {
		return nil, "", err
	}
	if q.AccuracyLevel, err = attr("accuracy_level", 0); err != nil {
		return nil, "", err
	}
	in := n.Inputs()
	if len(in) > 4 && in[4] != "" {
		return nil, fmt.Sprintf("MatMulNBits %q has g_idx: not supported", n.Name()), nil
	}
	if len(in) < 3 || in[2] == "" {
		return nil, fmt.Sprintf("MatMulNBits %q has no scales", n.Name()), nil
	}
	q.ScaleName = in[2]
	st, _, err := ix.constantTensor(in[2])
	if err != nil {
		return nil, "", err
	}
	if st == nil || st.DType() != tensor.Float32 {
		return nil, fmt.Sprintf("the scales %q of MatMulNBits %q are not float32 constants", in[2], n.Name()), nil
	}
	b, err := st.Data(srcDir)
	if err != nil {
		return nil, "", fmt.Errorf("export: %w", err)
	}
	q.Scales = float32s(b)
	if len(in) > 3 && in[3] != "" {
		q.ZeroPointName = in[3]
		zt, _, err := ix.constantTensor(in[3])
		if err != nil {
			return nil, "", err
		}
		if zt == nil || (zt.DType() != tensor.Uint8 && zt.DType() != tensor.Float32) {
			return nil, fmt.Sprintf("the zero points %q of MatMulNBits %q are not uint8 or float32 constants", in[3], n.Name()), nil
		}
		zb, err := zt.Data(srcDir)
		if err != nil {
			return nil, "", fmt.Errorf("export: %w", err)
		}
		if zt.DType() == tensor.Float32 {
			q.FloatZeroPoints = float32s(zb)
		} else {
			blocks := 0
			if q.BlockSize > 0 {
				blocks = (q.K + q.BlockSize - 1) / q.BlockSize
			}
			if q.ZeroPoints, err = quant.UnpackNBitsZeroPoints(zb, q.N, blocks, q.Bits); err != nil {
				return nil, fmt.Sprintf("the zero points of MatMulNBits %q: %v", n.Name(), err), nil
			}
		}
	}
	size, err := c.tensor.NumBytes()
	if err != nil {
		return nil, "", fmt.Errorf("export: %w", err)
	}
	// the scheme must be valid for the exposed bytes
	e := &TensorEntry{Name: c.name, DType: c.dtype, Shape: c.exposedShape(), Quant: q, Length: size}
	if _, err := e.Scheme(); err != nil {
		return nil, fmt.Sprintf("%s: %v", c.source, err), nil
	}
	return q, "", nil
}

// float32s decodes little-endian float32s.
func float32s(b []byte) []float32 {
	out := make([]float32, 0, len(b)/4)
	for i := 0; i+4 <= len(b); i += 4 {
		out = append(out, math.Float32frombits(binary.LittleEndian.Uint32(b[i:])))
	}
	return out
}
