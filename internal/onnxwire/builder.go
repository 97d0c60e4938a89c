package onnxwire

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/shira-ort/shira-ort/internal/atomicfile"
	"github.com/shira-ort/shira-ort/tensor"
	"google.golang.org/protobuf/encoding/protowire"
)

// Builder assembles a ModelProto from scratch, for tests and for tools that
// generate models in Go. Fields are written in the order ONNX's own
// serializer uses.
type Builder struct {
	IRVersion    int64
	Opsets       []Opset
	ProducerName string
	GraphName    string

	nodes, inits, inputs, outputs, valueInfos []*Message
}

// NewBuilder returns a builder for IR version 8 with the default-domain
// opset 17 (change the exported fields to taste).
func NewBuilder() *Builder {
	return &Builder{IRVersion: 8, Opsets: []Opset{{Domain: "", Version: 17}}, ProducerName: "shira-ort", GraphName: "g"}
}

// AddInitializer appends an initializer.
func (b *Builder) AddInitializer(t *Tensor) *Builder { b.inits = append(b.inits, t.Message); return b }

// AddInput appends a tensor graph input; see NewTensorValueInfo for dims
// and params.
func (b *Builder) AddInput(name string, dtype tensor.DType, dims []int64, params ...string) *Builder {
	b.inputs = append(b.inputs, NewTensorValueInfo(name, dtype, dims, params).Message)
	return b
}

// AddInputProto appends a graph input built elsewhere.
func (b *Builder) AddInputProto(v *ValueInfo) *Builder {
	b.inputs = append(b.inputs, v.Message)
	return b
}

// AddOutput appends a tensor graph output.
func (b *Builder) AddOutput(name string, dtype tensor.DType, dims []int64, params ...string) *Builder {
	b.outputs = append(b.outputs, NewTensorValueInfo(name, dtype, dims, params).Message)
	return b
}

// AddValueInfo appends a graph.value_info entry.
func (b *Builder) AddValueInfo(name string, dtype tensor.DType, dims []int64, params ...string) *Builder {
	b.valueInfos = append(b.valueInfos, NewTensorValueInfo(name, dtype, dims, params).Message)
	return b
}

// AddNode appends a node of the default domain.
func (b *Builder) AddNode(name, opType string, inputs, outputs []string, attrs ...*Attribute) *Builder {
	return b.AddNodeProto(NewNode(name, opType, "", inputs, outputs, attrs...))
}

// AddNodeProto appends a node built elsewhere.
func (b *Builder) AddNodeProto(n *Node) *Builder { b.nodes = append(b.nodes, n.Message); return b }

// Graph returns the GraphProto built so far (usable as a subgraph).
func (b *Builder) Graph() *Graph {
	g := &Message{}
	for _, n := range b.nodes {
		g.Append(MessageField(GraphNode, n))
	}
	g.Append(StringField(GraphName, b.GraphName))
	for _, t := range b.inits {
		g.Append(MessageField(GraphInitializer, t))
	}
	for _, v := range b.inputs {
		g.Append(MessageField(GraphInput, v))
	}
	for _, v := range b.outputs {
		g.Append(MessageField(GraphOutput, v))
	}
	for _, v := range b.valueInfos {
		g.Append(MessageField(GraphValueInfo, v))
	}
	return &Graph{g}
}

// Model returns the ModelProto built so far (Dir is empty).
func (b *Builder) Model() *Model {
	m := &Message{}
	m.Append(VarintField(ModelIRVersion, uint64(b.IRVersion)))
	if b.ProducerName != "" {
		m.Append(StringField(ModelProducerName, b.ProducerName))
	}
	m.Append(MessageField(ModelGraph, b.Graph().Message))
	for _, o := range b.Opsets {
		om := &Message{}
		om.Append(StringField(OpsetDomain, o.Domain))
		om.Append(VarintField(OpsetVersion, uint64(o.Version)))
		m.Append(MessageField(ModelOpsetImport, om))
	}
	return &Model{Message: m}
}

// Bytes returns the encoded model.
func (b *Builder) Bytes() []byte { return b.Model().Encode() }

// WriteFile writes the encoded model to path (atomically: temporary file
// and rename).
func (b *Builder) WriteFile(path string) error {
	if err := atomicfile.WriteFile(path, b.Bytes()); err != nil {
		return fmt.Errorf("onnxwire: %w", err)
	}
	return nil
}

// NewNode builds a NodeProto.
func NewNode(name, opType, domain string, inputs, outputs []string, attrs ...*Attribute) *Node {
	m := &Message{}
	for _, in := range inputs {
		m.Append(StringField(NodeInput, in))
	}
	for _, out := range outputs {
		m.Append(StringField(NodeOutput, out))
	}
	if name != "" {
		m.Append(StringField(NodeName, name))
	}
	m.Append(StringField(NodeOpType, opType))
	for _, a := range attrs {
		m.Append(MessageField(NodeAttribute, a.Message))
	}
	if domain != "" {
		m.Append(StringField(NodeDomain, domain))
	}
	return &Node{m}
}

func newAttr(name string, typ int64, value ...*Field) *Attribute {
	m := &Message{}
	m.Append(StringField(AttrName, name))
	for _, f := range value {
		m.Append(f)
	}
	m.Append(VarintField(AttrType, uint64(typ)))
	return &Attribute{m}
}

// IntAttr builds an INT attribute.
func IntAttr(name string, v int64) *Attribute {
	return newAttr(name, AttrTypeInt, VarintField(AttrI, uint64(v)))
}

// IntsAttr builds an INTS attribute.
func IntsAttr(name string, v ...int64) *Attribute {
	fs := make([]*Field, len(v))
	for i, x := range v {
		fs[i] = VarintField(AttrInts, uint64(x))
	}
	return newAttr(name, AttrTypeInts, fs...)
}

// FloatAttr builds a FLOAT attribute.
func FloatAttr(name string, v float32) *Attribute {
	return newAttr(name, AttrTypeFloat, Fixed32Field(AttrF, math.Float32bits(v)))
}

// TensorAttr builds a TENSOR attribute (as used by Constant's value).
func TensorAttr(name string, t *Tensor) *Attribute {
	return newAttr(name, AttrTypeTensor, MessageField(AttrT, t.Message))
}

// GraphAttr builds a GRAPH attribute (If's then_branch, Loop's body, ...).
func GraphAttr(name string, g *Graph) *Attribute {
	return newAttr(name, AttrTypeGraph, MessageField(AttrG, g.Message))
}

// TensorSpec describes a TensorProto with its data in any of the encodings
// ONNX allows; exactly one data source should be set. It exists so tests
// can produce every layout a reader meets in the wild.
type TensorSpec struct {
	Name  string
	DType tensor.DType
	Dims  []int64
	Raw   []byte    // raw_data
	Float []float32 // float_data (packed)
	Int32 []int32   // int32_data (packed); fp16/bf16 bit patterns go here too
	Int64 []int64   // int64_data (packed)
	F64   []float64 // double_data (packed)
	// External, when set, makes the tensor external (data_location = EXTERNAL).
	External *ExternalData
}

// Tensor builds the TensorProto.
func (s TensorSpec) Tensor() *Tensor {
	m := &Message{}
	for _, d := range s.Dims {
		m.Append(VarintField(TensorDims, uint64(d)))
	}
	m.Append(VarintField(TensorDataType, uint64(s.DType)))
	if s.Float != nil {
		var b []byte
		for _, v := range s.Float {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
		m.Append(BytesField(TensorFloatData, b))
	}
	if s.Int32 != nil {
		var b []byte
		for _, v := range s.Int32 {
			b = protowire.AppendVarint(b, uint64(int64(v)))
		}
		m.Append(BytesField(TensorInt32Data, b))
	}
	if s.Int64 != nil {
		var b []byte
		for _, v := range s.Int64 {
			b = protowire.AppendVarint(b, uint64(v))
		}
		m.Append(BytesField(TensorInt64Data, b))
	}
	m.Append(StringField(TensorName, s.Name))
	if s.Raw != nil {
		m.Append(BytesField(TensorRawData, s.Raw))
	}
	if s.F64 != nil {
		var b []byte
		for _, v := range s.F64 {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
		}
		m.Append(BytesField(TensorDoubleData, b))
	}
	t := &Tensor{m}
	if s.External != nil {
		t.SetExternal(*s.External)
	}
	return t
}

// NestedIf returns an If node (input cond, output out) whose then_branch
// is a graph holding one such If, and so on: levels If nodes in all, with
// inner as the innermost then_branch (the If nodes have no else_branch,
// so only inner is a complete ONNX graph). It is built in O(levels) time
// and space, encoded outside in, so tests can make models nested far
// deeper than Parse accepts (see MaxDepth); the result is parsed lazily,
// like any parsed node. levels must be at least 1.
func NestedIf(levels int, cond, out string, inner *Graph) *Node {
	nodeHead := (&Message{fields: []*Field{StringField(NodeInput, cond), StringField(NodeOutput, out),
		StringField(NodeOpType, "If")}}).Encode()
	attrHead := StringField(AttrName, "then_branch").appendTo(nil)
	attrTail := VarintField(AttrType, AttrTypeGraph).appendTo(nil)
	innerEnc := inner.Encode()
	// sizes inside out: graph[k] is the size of the then_branch of the If
	// at level k (graph[levels-1] is inner), attr[k] and node[k] those of
	// that If's attribute and the If itself
	graph := make([]int, levels)
	attr := make([]int, levels)
	node := make([]int, levels)
	graph[levels-1] = len(innerEnc)
	for k := levels - 1; k >= 0; k-- {
		if k < levels-1 {
			graph[k] = protowire.SizeTag(GraphNode) + protowire.SizeBytes(node[k+1])
		}
		attr[k] = len(attrHead) + protowire.SizeTag(AttrG) + protowire.SizeBytes(graph[k]) + len(attrTail)
		node[k] = len(nodeHead) + protowire.SizeTag(NodeAttribute) + protowire.SizeBytes(attr[k])
	}
	b := make([]byte, 0, node[0])
	for k := range levels {
		if k > 0 {
			b = protowire.AppendTag(b, GraphNode, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(node[k]))
		}
		b = append(b, nodeHead...)
		b = protowire.AppendTag(b, NodeAttribute, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(attr[k]))
		b = append(b, attrHead...)
		b = protowire.AppendTag(b, AttrG, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(graph[k]))
	}
	b = append(b, innerEnc...)
	for range levels {
		b = append(b, attrTail...)
	}
	n, err := Parse(b)
	if err != nil {
		panic("onnxwire: NestedIf: " + err.Error()) // cannot happen: b is well formed
	}
	return &Node{n}
}
