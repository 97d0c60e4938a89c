package qdqmodel

import (
	"fmt"
	"math"

	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/tensor"
)

// QuantizeWeights returns model with each named rank-2 float32
// initializer W (a MatMul weight [in, out]) replaced by its weight-only
// QDQ form: int8 codes under the same name, one scale per output column
// (axis 1, max |W[:, c]| / 127, no zero point), and a DequantizeLinear
// whose output the former readers of W now read. This is the per-channel
// int8 weight quantization of ONNX Runtime's tools, done in Go for the
// tests (codes: round half to even, saturated).
func QuantizeWeights(model []byte, names []string) ([]byte, error) {
	m, err := onnxwire.ParseModel(model, "")
	if err != nil {
		return nil, err
	}
	g, err := m.Graph()
	if err != nil {
		return nil, err
	}
	inits, err := g.Initializers()
	if err != nil {
		return nil, err
	}
	nodes, err := g.Nodes()
	if err != nil {
		return nil, err
	}
	byName := map[string]*onnxwire.Tensor{}
	for _, t := range inits {
		byName[t.Name()] = t
	}
	for _, name := range names {
		t := byName[name]
		if t == nil {
			return nil, fmt.Errorf("qdqmodel: no initializer %q", name)
		}
		dims, err := t.Dims()
		if err != nil {
			return nil, err
		}
		if t.DType() != tensor.Float32 || len(dims) != 2 {
			return nil, fmt.Errorf("qdqmodel: %q is %v %v, want a rank-2 float32 weight", name, t.DType(), dims)
		}
		data, err := t.Data("")
		if err != nil {
			return nil, err
		}
		w := tensor.Float32s(data)
		rows, cols := int(dims[0]), int(dims[1])
		scales := make([]float32, cols)
		for c := range cols {
			var mx float32
			for r := range rows {
				mx = max(mx, float32(math.Abs(float64(w[r*cols+c]))))
			}
			scales[c] = mx / 127
			if scales[c] == 0 {
				scales[c] = 1
			}
		}
		codes := make([]byte, rows*cols)
		for i, v := range w {
			q := math.RoundToEven(float64(v / scales[i%cols]))
			codes[i] = byte(int8(max(-128, min(127, q))))
		}
		g.ReplaceInitializer(t, onnxwire.NewTensor(name, tensor.Int8, dims, codes))
		g.AddInitializer(onnxwire.NewTensor(name+"_scale", tensor.Float32, []int64{int64(cols)}, tensor.Bytes(scales)))
		for _, n := range nodes {
			for k, in := range n.Inputs() {
				if in == name {
					if err := n.SetInput(k, name+"_dq"); err != nil {
						return nil, err
					}
				}
			}
		}
		dq := onnxwire.NewNode(name+"_dequantize", "DequantizeLinear", "", []string{name, name + "_scale"}, []string{name + "_dq"},
			onnxwire.IntAttr("axis", 1))
		g.PrependNode(dq)
	}
	return m.Encode(), nil
}
