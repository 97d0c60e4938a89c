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
)

// Quantization describes a quantized exposed weight (TensorEntry.Quant):
// its scales and zero points, so that the patcher can re-quantize adapter
// values with them. The exposed tensor holds the integer codes.
type Quantization struct {
	// Form is QuantQDQ.
	Form string `json:"form"`
	// Node is the DequantizeLinear node reading the codes.
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
}

// Scheme returns the quantization scheme of a quantized entry (nil, nil
// for a float one): what package patch needs to re-quantize values.
func (e *TensorEntry) Scheme() (*quant.Scheme, error) {
	q := e.Quant
	if q == nil {
		return nil, nil
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

// quantOf reads the quantization of a candidate reached through
// DequantizeLinear nodes: every path must go through one with the same
// scale, zero point and axis. ok is false (with a note) when they differ
// or the scale is not float32 constants.
func (ix *graphIndex) quantOf(c *candidate, srcDir string) (q *Quantization, note string, err error) {
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
	for i := 0; i+4 <= len(b); i += 4 {
		q.Scales = append(q.Scales, math.Float32frombits(binary.LittleEndian.Uint32(b[i:])))
	}
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
