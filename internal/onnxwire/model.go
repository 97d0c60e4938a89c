package onnxwire

import (
	"fmt"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/encoding/protowire"
)

// Model is a parsed ModelProto. Dir is the directory external tensor data
// is resolved against (the directory of the model file).
type Model struct {
	*Message
	Dir string
}

// Opset is one entry of ModelProto.opset_import.
type Opset struct {
	Domain  string
	Version int64
}

// ParseModel parses a ModelProto aliasing b; dir is where external data
// lives.
func ParseModel(b []byte, dir string) (*Model, error) {
	m, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("onnxwire: parse model: %w", err)
	}
	if !m.Has(ModelGraph) {
		return nil, fmt.Errorf("onnxwire: parse model: %w: no graph (is this an ONNX model?)", ErrMalformed)
	}
	return &Model{Message: m, Dir: dir}, nil
}

// ReadModel reads and parses the model file at path. The whole protobuf
// (at most 2 GB) is held in memory; external data stays on disk.
func ReadModel(path string) (*Model, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("onnxwire: %w", err)
	}
	m, err := ParseModel(b, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// IRVersion returns ModelProto.ir_version (0 when absent).
func (m *Model) IRVersion() (int64, error) { return m.getInt(ModelIRVersion, 0) }

// SetIRVersion sets ModelProto.ir_version in place.
func (m *Model) SetIRVersion(v int64) { m.SetVarint(ModelIRVersion, uint64(v)) }

// Opsets returns the opset imports in order.
func (m *Model) Opsets() ([]Opset, error) {
	msgs, err := m.messages(ModelOpsetImport)
	if err != nil {
		return nil, fmt.Errorf("onnxwire: opset_import: %w", err)
	}
	out := make([]Opset, 0, len(msgs))
	for _, o := range msgs {
		v, err := o.getInt(OpsetVersion, 0)
		if err != nil {
			return nil, fmt.Errorf("onnxwire: opset_import: %w", err)
		}
		out = append(out, Opset{Domain: o.getString(OpsetDomain), Version: v})
	}
	return out, nil
}

// AddOpset appends an opset import (for a domain the model does not
// import yet).
func (m *Model) AddOpset(o Opset) {
	om := &Message{}
	om.Append(StringField(OpsetDomain, o.Domain))
	om.Append(VarintField(OpsetVersion, uint64(o.Version)))
	m.InsertAfterLast(MessageField(ModelOpsetImport, om))
}

// Graph returns the main graph (parsed once and cached).
func (m *Model) Graph() (*Graph, error) {
	f := m.Get(ModelGraph)
	if f == nil {
		return nil, fmt.Errorf("onnxwire: %w: model has no graph", ErrMalformed)
	}
	g, err := f.Message()
	if err != nil {
		return nil, fmt.Errorf("onnxwire: graph: %w", err)
	}
	return &Graph{g}, nil
}

// Graph is a parsed GraphProto.
type Graph struct{ *Message }

// Name returns GraphProto.name.
func (g *Graph) Name() string { return g.getString(GraphName) }

// Nodes returns the nodes in order.
func (g *Graph) Nodes() ([]*Node, error) {
	msgs, err := g.messages(GraphNode)
	if err != nil {
		return nil, fmt.Errorf("onnxwire: graph node: %w", err)
	}
	out := make([]*Node, len(msgs))
	for i, n := range msgs {
		out[i] = &Node{n}
	}
	return out, nil
}

// Initializers returns graph.initializer in order.
func (g *Graph) Initializers() ([]*Tensor, error) {
	msgs, err := g.messages(GraphInitializer)
	if err != nil {
		return nil, fmt.Errorf("onnxwire: graph initializer: %w", err)
	}
	out := make([]*Tensor, len(msgs))
	for i, t := range msgs {
		out[i] = &Tensor{t}
	}
	return out, nil
}

func (g *Graph) valueInfos(num protowire.Number) ([]*ValueInfo, error) {
	msgs, err := g.messages(num)
	if err != nil {
		return nil, fmt.Errorf("onnxwire: graph field %d: %w", num, err)
	}
	out := make([]*ValueInfo, len(msgs))
	for i, v := range msgs {
		out[i] = &ValueInfo{v}
	}
	return out, nil
}

// Inputs returns graph.input.
func (g *Graph) Inputs() ([]*ValueInfo, error) { return g.valueInfos(GraphInput) }

// Outputs returns graph.output.
func (g *Graph) Outputs() ([]*ValueInfo, error) { return g.valueInfos(GraphOutput) }

// ValueInfos returns graph.value_info.
func (g *Graph) ValueInfos() ([]*ValueInfo, error) { return g.valueInfos(GraphValueInfo) }

// PrependNode inserts n before the graph's first node (where a node
// reading only initializers keeps the nodes in topological order).
func (g *Graph) PrependNode(n *Node) {
	for i, f := range g.fields {
		if f.Num == GraphNode {
			g.Insert(i, MessageField(GraphNode, n.Message))
			return
		}
	}
	g.Append(MessageField(GraphNode, n.Message))
}

// ReplaceNode puts nw where old was (keeping the nodes' order) and
// reports whether old was found.
func (g *Graph) ReplaceNode(old, nw *Node) bool {
	return g.ReplaceMessage(GraphNode, old.Message, nw.Message)
}

// RemoveNode deletes node n from the graph.
func (g *Graph) RemoveNode(n *Node) bool { return g.RemoveMessage(n.Message) }

// AddInitializer inserts t after the last initializer.
func (g *Graph) AddInitializer(t *Tensor) {
	g.InsertAfterLast(MessageField(GraphInitializer, t.Message))
}

// ReplaceInitializer puts nt where old was and reports whether old was found.
func (g *Graph) ReplaceInitializer(old, nt *Tensor) bool {
	return g.ReplaceMessage(GraphInitializer, old.Message, nt.Message)
}

// AddInput appends v to graph.input (after the last existing input).
func (g *Graph) AddInput(v *ValueInfo) { g.InsertAfterLast(MessageField(GraphInput, v.Message)) }

// ReplaceInput puts v in the place of every graph.input entry named
// v.Name() and returns how many it replaced.
func (g *Graph) ReplaceInput(v *ValueInfo) int {
	n := 0
	for _, f := range g.fields {
		if f.Num != GraphInput {
			continue
		}
		if old, err := f.Message(); err == nil && old.getString(ValueInfoName) == v.Name() {
			g.Replace(f, MessageField(GraphInput, v.Message))
			n++
		}
	}
	return n
}

// RemoveInputs removes the graph.input entries whose name is in names,
// returning how many.
func (g *Graph) RemoveInputs(names map[string]bool) int { return g.removeNamed(GraphInput, names) }

// RemoveValueInfos removes the graph.value_info entries whose name is in
// names, returning how many.
func (g *Graph) RemoveValueInfos(names map[string]bool) int {
	return g.removeNamed(GraphValueInfo, names)
}

// removeNamed removes the ValueInfoProto fields num whose name is in names.
func (g *Graph) removeNamed(num protowire.Number, names map[string]bool) int {
	return g.RemoveFunc(func(f *Field) bool {
		if f.Num != num {
			return false
		}
		v, err := f.Message()
		return err == nil && names[v.getString(ValueInfoName)]
	})
}

// Node is a parsed NodeProto.
type Node struct{ *Message }

// Name returns NodeProto.name.
func (n *Node) Name() string { return n.getString(NodeName) }

// OpType returns NodeProto.op_type.
func (n *Node) OpType() string { return n.getString(NodeOpType) }

// Domain returns NodeProto.domain ("" is the default ONNX domain).
func (n *Node) Domain() string { return n.getString(NodeDomain) }

// IsONNX reports whether the node is in the default ONNX domain.
func (n *Node) IsONNX() bool { d := n.Domain(); return d == "" || d == "ai.onnx" }

// Inputs returns the input names ("" marks an omitted optional input).
func (n *Node) Inputs() []string { return n.strings(NodeInput) }

// Outputs returns the output names.
func (n *Node) Outputs() []string { return n.strings(NodeOutput) }

// SetInput renames input i in place.
func (n *Node) SetInput(i int, name string) error {
	k := 0
	for _, f := range n.fields {
		if f.Num != NodeInput {
			continue
		}
		if k == i {
			return boolErr(n.Replace(f, StringField(NodeInput, name)), "node input")
		}
		k++
	}
	return fmt.Errorf("onnxwire: node %q has no input %d", n.Name(), i)
}

// Attributes returns the attributes in order.
func (n *Node) Attributes() ([]*Attribute, error) {
	msgs, err := n.messages(NodeAttribute)
	if err != nil {
		return nil, fmt.Errorf("onnxwire: node %q attribute: %w", n.Name(), err)
	}
	out := make([]*Attribute, len(msgs))
	for i, a := range msgs {
		out[i] = &Attribute{a}
	}
	return out, nil
}

// Attr returns the attribute called name, or nil when absent.
func (n *Node) Attr(name string) (*Attribute, error) {
	attrs, err := n.Attributes()
	if err != nil {
		return nil, err
	}
	for _, a := range attrs {
		if a.Name() == name {
			return a, nil
		}
	}
	return nil, nil
}

// AttrInt returns integer attribute name, or def when absent.
func (n *Node) AttrInt(name string, def int64) (int64, error) {
	a, err := n.Attr(name)
	if err != nil || a == nil {
		return def, err
	}
	return a.Int()
}

// Attribute is a parsed AttributeProto.
type Attribute struct{ *Message }

// Name returns AttributeProto.name.
func (a *Attribute) Name() string { return a.getString(AttrName) }

// Type returns AttributeProto.type (AttrTypeInt, ...); 0 when absent.
func (a *Attribute) Type() int64 { v, _ := a.getInt(AttrType, 0); return v }

// Int returns the i field.
func (a *Attribute) Int() (int64, error) { return a.getInt(AttrI, 0) }

// Ints returns the ints field (packed or not).
func (a *Attribute) Ints() ([]int64, error) { return a.Int64s(AttrInts) }

// Float returns the f field.
func (a *Attribute) Float() (float32, error) {
	f := a.Get(AttrF)
	if f == nil {
		return 0, nil
	}
	return f.Float32()
}

// Str returns the s field.
func (a *Attribute) Str() string { return a.getString(AttrS) }

// Tensor returns the t field, or nil.
func (a *Attribute) Tensor() (*Tensor, error) {
	f := a.Get(AttrT)
	if f == nil {
		return nil, nil
	}
	t, err := f.Message()
	if err != nil {
		return nil, fmt.Errorf("onnxwire: attribute %q: %w", a.Name(), err)
	}
	return &Tensor{t}, nil
}

// Subgraphs returns the graphs held by the g and graphs fields.
func (a *Attribute) Subgraphs() ([]*Graph, error) {
	var out []*Graph
	for _, f := range a.fields {
		if f.Num != AttrG && f.Num != AttrGraphs {
			continue
		}
		g, err := f.Message()
		if err != nil {
			return nil, fmt.Errorf("onnxwire: attribute %q subgraph: %w", a.Name(), err)
		}
		out = append(out, &Graph{g})
	}
	return out, nil
}

func boolErr(ok bool, what string) error {
	if ok {
		return nil
	}
	return fmt.Errorf("onnxwire: %s not found", what)
}
