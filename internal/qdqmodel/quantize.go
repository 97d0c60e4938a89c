package qdqmodel

import (
	"fmt"
	"math"
	"slices"

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
	src, err := parseWeights(model, names)
	if err != nil {
		return nil, err
	}
	g, nodes := src.g, src.nodes
	for _, fw := range src.weights {
		t, name, dims, w, rows, cols := fw.t, fw.name, fw.dims, fw.w, fw.rows, fw.cols
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
	return src.m.Encode(), nil
}

// QuantizeWeightsNBits returns model with each MatMul that reads one of
// the named rank-2 float32 initializers W [K, N] as its second input
// replaced by ONNX Runtime's MatMulNBits (com.microsoft): W quantized to
// bits-bit codes in blocks of blockSize along K, asymmetric (one scale and
// one zero point per column and block, from the block's minimum and
// maximum, zero included, as ORT's MatMul4BitsQuantizer does with
// is_symmetric=False), stored as B [N, blocks, blockSize·bits/8] under
// W's name, with scales W_scales [N·blocks] and packed zero points W_zp.
// accuracyLevel is the op's attribute. This is the weight quantization
// onnxruntime-genai's models carry, done in Go for the tests.
func QuantizeWeightsNBits(model []byte, names []string, bits, blockSize, accuracyLevel int) ([]byte, error) {
	if bits != 2 && bits != 4 && bits != 8 || blockSize < 16 || blockSize&(blockSize-1) != 0 {
		return nil, fmt.Errorf("qdqmodel: %d bits in blocks of %d: want 2, 4 or 8 bits and a power of two >= 16", bits, blockSize)
	}
	src, err := parseWeights(model, names)
	if err != nil {
		return nil, err
	}
	m, g, nodes := src.m, src.g, src.nodes
	ops, err := m.Opsets()
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(ops, func(o onnxwire.Opset) bool { return o.Domain == "com.microsoft" }) {
		m.AddOpset(onnxwire.Opset{Domain: "com.microsoft", Version: 1})
	}
	qmax := float64(int(1)<<bits - 1)
	for _, fw := range src.weights {
		t, name, w, k, n := fw.t, fw.name, fw.w, fw.rows, fw.cols
		blocks := (k + blockSize - 1) / blockSize
		blob := blockSize * bits / 8
		perCol := (blocks*bits + 7) / 8
		codes := make([]byte, n*blocks*blob)
		scales := make([]float32, n*blocks)
		zps := make([]byte, n*perCol)
		for c := range n {
			for b := range blocks {
				lo, hi := float32(0), float32(0)
				for r := b * blockSize; r < min(k, (b+1)*blockSize); r++ {
					lo, hi = min(lo, w[r*n+c]), max(hi, w[r*n+c])
				}
				sc := (hi - lo) / float32(qmax)
				if sc == 0 {
					sc = 1
				}
				zp := int(max(0, min(qmax, math.RoundToEven(float64(-lo/sc)))))
				scales[c*blocks+b] = sc
				zps[c*perCol+b*bits/8] |= byte(zp << (b * bits % 8))
				for r := b * blockSize; r < min(k, (b+1)*blockSize); r++ {
					q := int(max(0, min(qmax, math.RoundToEven(float64(w[r*n+c]/sc))+float64(zp))))
					pos := r - b*blockSize
					codes[(c*blocks+b)*blob+pos*bits/8] |= byte(q << (pos * bits % 8))
				}
			}
		}
		var mm *onnxwire.Node
		for _, nd := range nodes {
			if in := nd.Inputs(); nd.OpType() == "MatMul" && nd.IsONNX() && len(in) == 2 && in[1] == name {
				if mm != nil {
					return nil, fmt.Errorf("qdqmodel: %q is read by more than one MatMul", name)
				}
				mm = nd
			}
		}
		if mm == nil {
			return nil, fmt.Errorf("qdqmodel: no MatMul reads %q as its weight", name)
		}
		g.ReplaceInitializer(t, onnxwire.NewTensor(name, tensor.Uint8, []int64{int64(n), int64(blocks), int64(blob)}, codes))
		g.AddInitializer(onnxwire.NewTensor(name+"_scales", tensor.Float32, []int64{int64(n * blocks)}, tensor.Bytes(scales)))
		g.AddInitializer(onnxwire.NewTensor(name+"_zp", tensor.Uint8, []int64{int64(n * perCol)}, zps))
		nb := onnxwire.NewNode(mm.Name(), "MatMulNBits", "com.microsoft",
			[]string{mm.Inputs()[0], name, name + "_scales", name + "_zp"}, mm.Outputs(),
			onnxwire.IntAttr("K", int64(k)), onnxwire.IntAttr("N", int64(n)), onnxwire.IntAttr("bits", int64(bits)),
			onnxwire.IntAttr("block_size", int64(blockSize)), onnxwire.IntAttr("accuracy_level", int64(accuracyLevel)))
		g.ReplaceNode(mm, nb)
	}
	return m.Encode(), nil
}

// source is a parsed model and the rank-2 float32 weights to quantize.
type source struct {
	m       *onnxwire.Model
	g       *onnxwire.Graph
	nodes   []*onnxwire.Node
	weights []floatWeight
}

// floatWeight is one named rank-2 float32 initializer, [rows, cols].
type floatWeight struct {
	t          *onnxwire.Tensor
	name       string
	dims       []int64
	rows, cols int
	w          []float32
}

// parseWeights parses model and finds the named initializers, which must
// be rank-2 float32 tensors.
func parseWeights(model []byte, names []string) (*source, error) {
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
	src := &source{m: m, g: g, nodes: nodes}
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
		src.weights = append(src.weights, floatWeight{t: t, name: name, dims: dims, rows: int(dims[0]), cols: int(dims[1]), w: tensor.Float32s(data)})
	}
	return src, nil
}
