// Package qdqmodel builds small quantized ONNX models in QDQ form for the
// tests: float activations, weights stored as integer codes behind
// DequantizeLinear (per tensor and per axis, with and without zero
// points, int8, uint8 and int16), read by MatMul and Gemm — the form
// ONNX Runtime's quantization tools produce for weight-only quantization
// and that mobile NPUs run.
package qdqmodel

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/tensor"
)

// In and Out are the model's input and output widths; its input "x" is
// [batch, In] float32 and its output "y" [batch, Out].
const (
	In  = 64
	Out = 16
)

// Weight describes one quantized weight of the model.
type Weight struct {
	// Name is the codes initializer's name.
	Name string
	// Codes is the code type: Int8, Uint8 or Int16.
	Codes tensor.DType
	// Shape is the codes' shape as stored.
	Shape []int64
	// Axis is DequantizeLinear's axis; -1 means per tensor (one scale).
	Axis int
	// ZeroPoint says whether the node has zero points (random, nonzero).
	ZeroPoint bool
}

// Weights are the model's weights, in graph order:
//
//	h1 = Relu(MatMul(x, DQ(w1)))            w1 int8  [64, 48], per axis 1, no zero point
//	h2 = Relu(Gemm(h1, DQ(w2), transB=1))   w2 uint8 [32, 48], per tensor, zero point
//	y  = MatMul(h2, DQ(w3))                 w3 int16 [32, 16], per axis 0, zero points
var Weights = []Weight{
	{Name: "w1", Codes: tensor.Int8, Shape: []int64{In, 48}, Axis: 1},
	{Name: "w2", Codes: tensor.Uint8, Shape: []int64{32, 48}, Axis: -1, ZeroPoint: true},
	{Name: "w3", Codes: tensor.Int16, Shape: []int64{32, Out}, Axis: 0, ZeroPoint: true},
}

// Build returns the encoded model with random codes, scales and zero
// points drawn from seed (opset 21, for int16 DequantizeLinear).
func Build(seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 21))
	b := onnxwire.NewBuilder()
	b.Opsets = []onnxwire.Opset{{Domain: "", Version: 21}}
	b.IRVersion = 10
	b.AddInput("x", tensor.Float32, []int64{-1, In}, "batch")
	for _, w := range Weights {
		addWeight(b, w, rng)
	}
	b.AddNode("mm1", "MatMul", []string{"x", "w1_dq"}, []string{"a1"})
	b.AddNode("relu1", "Relu", []string{"a1"}, []string{"h1"})
	b.AddNode("gemm2", "Gemm", []string{"h1", "w2_dq"}, []string{"a2"}, onnxwire.IntAttr("transB", 1))
	b.AddNode("relu2", "Relu", []string{"a2"}, []string{"h2"})
	b.AddNode("mm3", "MatMul", []string{"h2", "w3_dq"}, []string{"y"})
	b.AddOutput("y", tensor.Float32, []int64{-1, Out}, "batch")
	return b.Bytes()
}

// addWeight adds w's codes, scale and zero point initializers and its
// DequantizeLinear node (output NAME_dq).
func addWeight(b *onnxwire.Builder, w Weight, rng *rand.Rand) {
	n := 1
	for _, d := range w.Shape {
		n *= int(d)
	}
	channels := 1
	if w.Axis >= 0 {
		channels = int(w.Shape[w.Axis])
	}
	lo, hi := codeRange(w.Codes)
	codes := make([]byte, n*w.Codes.Size())
	for i := range n {
		// codes spread over most of the range, a few at the ends
		q := lo + int32(rng.IntN(int(hi-lo)+1))
		putCode(codes, w.Codes, i, q)
	}
	scales := make([]float32, channels)
	for i := range scales {
		// about 1/sqrt(fan-in) over the code range's half width
		scales[i] = float32((0.5 + rng.Float64()) / math.Sqrt(float64(w.Shape[0])) / float64(hi-lo) * 2)
	}
	dims := []int64{int64(channels)}
	if w.Axis < 0 {
		dims = nil // a scalar
	}
	b.AddInitializer(onnxwire.NewTensor(w.Name, w.Codes, w.Shape, codes))
	b.AddInitializer(onnxwire.NewTensor(w.Name+"_scale", tensor.Float32, dims, tensor.Bytes(scales)))
	inputs := []string{w.Name, w.Name + "_scale"}
	if w.ZeroPoint {
		zp := make([]byte, channels*w.Codes.Size())
		for i := range channels {
			putCode(zp, w.Codes, i, lo/8+int32(rng.IntN(int(hi-lo)/4+1)))
		}
		b.AddInitializer(onnxwire.NewTensor(w.Name+"_zp", w.Codes, dims, zp))
		inputs = append(inputs, w.Name+"_zp")
	}
	var attrs []*onnxwire.Attribute
	if w.Axis >= 0 {
		attrs = append(attrs, onnxwire.IntAttr("axis", int64(w.Axis)))
	}
	b.AddNode(w.Name+"_dequantize", "DequantizeLinear", inputs, []string{w.Name + "_dq"}, attrs...)
}

// codeRange returns the smallest and largest code of dt.
func codeRange(dt tensor.DType) (int32, int32) {
	switch dt {
	case tensor.Int8:
		return math.MinInt8, math.MaxInt8
	case tensor.Uint8:
		return 0, math.MaxUint8
	case tensor.Int16:
		return math.MinInt16, math.MaxInt16
	}
	panic(fmt.Sprintf("qdqmodel: code type %v", dt))
}

func putCode(b []byte, dt tensor.DType, i int, q int32) {
	switch dt.Size() {
	case 1:
		b[i] = byte(q)
	default:
		binary.LittleEndian.PutUint16(b[2*i:], uint16(q))
	}
}

// BuildMLP returns a model of layers MatMul layers of width×width int8
// weights quantized per output channel (axis 1, no zero point) with Relu
// between them: input "x" [batch, width], output "y" [batch, width]. It is
// the weight-only QDQ form of a plain MLP, for benchmarks.
func BuildMLP(seed uint64, width, layers int) []byte {
	rng := rand.New(rand.NewPCG(seed, 22))
	b := onnxwire.NewBuilder()
	b.Opsets = []onnxwire.Opset{{Domain: "", Version: 21}}
	b.IRVersion = 10
	b.AddInput("x", tensor.Float32, []int64{-1, int64(width)}, "batch")
	in := "x"
	for l := range layers {
		name := fmt.Sprintf("w%d", l)
		addWeight(b, Weight{Name: name, Codes: tensor.Int8, Shape: []int64{int64(width), int64(width)}, Axis: 1}, rng)
		out := fmt.Sprintf("a%d", l)
		b.AddNode(fmt.Sprintf("mm%d", l), "MatMul", []string{in, name + "_dq"}, []string{out})
		if l < layers-1 {
			b.AddNode(fmt.Sprintf("relu%d", l), "Relu", []string{out}, []string{out + "_r"})
			out += "_r"
		}
		in = out
	}
	b.AddNode("out", "Identity", []string{in}, []string{"y"})
	b.AddOutput("y", tensor.Float32, []int64{-1, int64(width)}, "batch")
	return b.Bytes()
}

// BuildFullMLP is BuildMLP in full QDQ form, as static quantization tools
// write it for NPUs: the activations are quantized too (uint8, per tensor,
// a QuantizeLinear / DequantizeLinear pair before every MatMul and after
// it), so ONNX Runtime fuses each DequantizeLinear → MatMul →
// QuantizeLinear into one QLinearMatMul. Input "x" and output "y" are
// float32 [batch, width].
func BuildFullMLP(seed uint64, width, layers int) []byte {
	rng := rand.New(rand.NewPCG(seed, 23))
	b := onnxwire.NewBuilder()
	b.Opsets = []onnxwire.Opset{{Domain: "", Version: 21}}
	b.IRVersion = 10
	b.AddInput("x", tensor.Float32, []int64{-1, int64(width)}, "batch")
	// activation quantization: uint8, one scale per tensor, zero point 128
	actScale := func(name string, s float32) {
		b.AddInitializer(onnxwire.NewTensor(name+"_s", tensor.Float32, nil, tensor.Bytes([]float32{s})))
		b.AddInitializer(onnxwire.NewTensor(name+"_z", tensor.Uint8, nil, []byte{128}))
	}
	qdq := func(in, name string, s float32) string {
		actScale(name, s)
		b.AddNode(name+"_q", "QuantizeLinear", []string{in, name + "_s", name + "_z"}, []string{name + "_qv"})
		b.AddNode(name+"_dq", "DequantizeLinear", []string{name + "_qv", name + "_s", name + "_z"}, []string{name + "_f"})
		return name + "_f"
	}
	in := qdq("x", "in", 4.0/128)
	for l := range layers {
		name := fmt.Sprintf("w%d", l)
		addWeight(b, Weight{Name: name, Codes: tensor.Int8, Shape: []int64{int64(width), int64(width)}, Axis: 1}, rng)
		out := fmt.Sprintf("a%d", l)
		b.AddNode(fmt.Sprintf("mm%d", l), "MatMul", []string{in, name + "_dq"}, []string{out})
		in = qdq(out, fmt.Sprintf("act%d", l), 6.0/128)
		if l < layers-1 {
			b.AddNode(fmt.Sprintf("relu%d", l), "Relu", []string{in}, []string{in + "_r"})
			in = qdq(in+"_r", fmt.Sprintf("relu%d", l), 6.0/128)
		}
	}
	b.AddNode("out", "Identity", []string{in}, []string{"y"})
	b.AddOutput("y", tensor.Float32, []int64{-1, int64(width)}, "batch")
	return b.Bytes()
}

// BuildNBits returns a model of one ONNX Runtime MatMulNBits (the 2/4/8-bit
// blockwise form onnxruntime-genai runs): input "x" [batch, k] float32,
// output "y" [batch, n], the weight B packed as [n][blocks][blockSize·bits/8]
// random codes with random positive scales and, with zeroPoints, random
// packed uint8 zero points (else ORT's default 2^(bits−1)). accuracyLevel is
// the op's attribute (0: compute in float32; 4: int8 compute when ORT can
// prepack B).
func BuildNBits(seed uint64, k, n, bits, blockSize int, zeroPoints bool, accuracyLevel int) []byte {
	rng := rand.New(rand.NewPCG(seed, 24))
	b := onnxwire.NewBuilder()
	b.Opsets = []onnxwire.Opset{{Domain: "", Version: 21}, {Domain: "com.microsoft", Version: 1}}
	b.IRVersion = 10
	b.AddInput("x", tensor.Float32, []int64{-1, int64(k)}, "batch")
	blocks := (k + blockSize - 1) / blockSize
	blob := blockSize * bits / 8
	codes := make([]byte, n*blocks*blob)
	for i := range codes {
		codes[i] = byte(rng.IntN(256))
	}
	half := float64(int(1) << (bits - 1))
	scales := make([]float32, n*blocks)
	for i := range scales {
		scales[i] = float32((0.5 + rng.Float64()) / math.Sqrt(float64(k)) / half)
	}
	b.AddInitializer(onnxwire.NewTensor("B", tensor.Uint8, []int64{int64(n), int64(blocks), int64(blob)}, codes))
	b.AddInitializer(onnxwire.NewTensor("B_scales", tensor.Float32, []int64{int64(n * blocks)}, tensor.Bytes(scales)))
	inputs := []string{"x", "B", "B_scales"}
	if zeroPoints {
		perCol := (blocks*bits + 7) / 8
		zp := make([]byte, n*perCol)
		for i := range zp {
			zp[i] = byte(rng.IntN(256))
		}
		b.AddInitializer(onnxwire.NewTensor("B_zp", tensor.Uint8, []int64{int64(n * perCol)}, zp))
		inputs = append(inputs, "B_zp")
	}
	b.AddNodeProto(onnxwire.NewNode("mm", "MatMulNBits", "com.microsoft", inputs, []string{"y"},
		onnxwire.IntAttr("K", int64(k)), onnxwire.IntAttr("N", int64(n)), onnxwire.IntAttr("bits", int64(bits)),
		onnxwire.IntAttr("block_size", int64(blockSize)), onnxwire.IntAttr("accuracy_level", int64(accuracyLevel))))
	b.AddOutput("y", tensor.Float32, []int64{-1, int64(n)}, "batch")
	return b.Bytes()
}

// BuildConvTranspose returns a model whose quantized weights reach their
// consumers other than directly: a Conv weight (int8 [8, 3, 3, 3], per
// output channel, axis 0) and a MatMul weight stored transposed (uint8
// [16, 32] with zero points, per axis 0) read through Transpose. Input "x"
// is float32 [batch, 3, 6, 6], output "y" [batch, 16].
func BuildConvTranspose(seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 25))
	b := onnxwire.NewBuilder()
	b.Opsets = []onnxwire.Opset{{Domain: "", Version: 21}}
	b.IRVersion = 10
	b.AddInput("x", tensor.Float32, []int64{-1, 3, 6, 6}, "batch")
	addWeight(b, Weight{Name: "cw", Codes: tensor.Int8, Shape: []int64{8, 3, 3, 3}, Axis: 0}, rng)
	addWeight(b, Weight{Name: "tw", Codes: tensor.Uint8, Shape: []int64{16, 32}, Axis: 0, ZeroPoint: true}, rng)
	b.AddNode("conv", "Conv", []string{"x", "cw_dq"}, []string{"c"}, onnxwire.IntsAttr("kernel_shape", 3, 3))
	b.AddNode("relu", "Relu", []string{"c"}, []string{"r"})
	b.AddNode("pool", "GlobalAveragePool", []string{"r"}, []string{"p"})
	b.AddInitializer(onnxwire.NewTensor("flat_shape", tensor.Int64, []int64{2}, tensor.Bytes([]int64{0, 8})))
	b.AddNode("flat", "Reshape", []string{"p", "flat_shape"}, []string{"f"})
	// f [batch, 8] padded to 32 features by a MatMul with a fixed float matrix
	pad := make([]float32, 8*32)
	for i := range pad {
		pad[i] = float32(rng.NormFloat64()) * 0.3
	}
	b.AddInitializer(onnxwire.NewTensor("pad", tensor.Float32, []int64{8, 32}, tensor.Bytes(pad)))
	b.AddNode("widen", "MatMul", []string{"f", "pad"}, []string{"h"})
	b.AddNode("t", "Transpose", []string{"tw_dq"}, []string{"tw_t"}, onnxwire.IntsAttr("perm", 1, 0))
	b.AddNode("mm", "MatMul", []string{"h", "tw_t"}, []string{"y"})
	b.AddOutput("y", tensor.Float32, []int64{-1, 16}, "batch")
	return b.Bytes()
}

// BuildFullMatMul is one MatMul in full QDQ form (as BuildFullMLP's
// layers: uint8 activations per tensor with zero point 128, quantized
// before and after), so that ONNX Runtime runs a QLinearMatMul with the
// constant weight "w" as B: codes of type codes (Int8 or Uint8) [k, n],
// per tensor (axis −1) or per column (axis 1), with or without zero
// points. Input "x" and output "y" are float32 [batch, k] and [batch, n].
func BuildFullMatMul(seed uint64, k, n int, codes tensor.DType, axis int, zeroPoint bool) []byte {
	return buildFullMatMuls(seed, k, n, codes, axis, zeroPoint, false)
}

// BuildFullSharedMatMul is BuildFullMatMul with a second QLinearMatMul
// reading the same weight, on the input's Relu: outputs "y" (x·W) and
// "z" (relu(x)·W).
func BuildFullSharedMatMul(seed uint64, k, n int) []byte {
	return buildFullMatMuls(seed, k, n, tensor.Int8, 1, false, true)
}

func buildFullMatMuls(seed uint64, k, n int, codes tensor.DType, axis int, zeroPoint, shared bool) []byte {
	rng := rand.New(rand.NewPCG(seed, 26))
	b := onnxwire.NewBuilder()
	b.Opsets = []onnxwire.Opset{{Domain: "", Version: 21}}
	b.IRVersion = 10
	b.AddInput("x", tensor.Float32, []int64{-1, int64(k)}, "batch")
	qdq := func(in, name string, s float32) string {
		b.AddInitializer(onnxwire.NewTensor(name+"_s", tensor.Float32, nil, tensor.Bytes([]float32{s})))
		b.AddInitializer(onnxwire.NewTensor(name+"_z", tensor.Uint8, nil, []byte{128}))
		b.AddNode(name+"_q", "QuantizeLinear", []string{in, name + "_s", name + "_z"}, []string{name + "_qv"})
		b.AddNode(name+"_dq", "DequantizeLinear", []string{name + "_qv", name + "_s", name + "_z"}, []string{name + "_f"})
		return name + "_f"
	}
	in := qdq("x", "in", 4.0/128)
	addWeight(b, Weight{Name: "w", Codes: codes, Shape: []int64{int64(k), int64(n)}, Axis: axis, ZeroPoint: zeroPoint}, rng)
	b.AddNode("mm", "MatMul", []string{in, "w_dq"}, []string{"a"})
	out := qdq("a", "out", 6.0/128)
	b.AddNode("id", "Identity", []string{out}, []string{"y"})
	b.AddOutput("y", tensor.Float32, []int64{-1, int64(n)}, "batch")
	if shared {
		b.AddNode("relu", "Relu", []string{"x"}, []string{"xr"})
		in2 := qdq("xr", "in2", 4.0/128)
		b.AddNode("mm2", "MatMul", []string{in2, "w_dq"}, []string{"a2"})
		out2 := qdq("a2", "out2", 6.0/128)
		b.AddNode("id2", "Identity", []string{out2}, []string{"z"})
		b.AddOutput("z", tensor.Float32, []int64{-1, int64(n)}, "batch")
	}
	return b.Bytes()
}
