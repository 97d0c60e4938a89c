package onnxwire

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// FunctionProto.node; FunctionProto is otherwise left alone.
const functionNode protowire.Number = 7

// WalkTensors calls fn for every TensorProto in the model: graph
// initializers, sparse initializers (values and indices), tensors held by
// node attributes, and all of these inside subgraphs (If/Loop/Scan bodies)
// and inside model-local functions, recursively. training_info is not
// visited. Edits fn makes are kept (the parsed messages are cached).
func (m *Model) WalkTensors(fn func(*Tensor) error) error {
	g, err := m.Graph()
	if err != nil {
		return err
	}
	if err := walkGraph(g.Message, fn); err != nil {
		return err
	}
	fns, err := m.messages(ModelFunctions)
	if err != nil {
		return fmt.Errorf("onnxwire: functions: %w", err)
	}
	for _, f := range fns {
		nodes, err := f.messages(functionNode)
		if err != nil {
			return fmt.Errorf("onnxwire: function node: %w", err)
		}
		for _, n := range nodes {
			if err := walkNode(n, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

func walkGraph(g *Message, fn func(*Tensor) error) error {
	for _, f := range g.fields {
		var err error
		switch f.Num {
		case GraphInitializer:
			err = walkTensorField(f, fn)
		case GraphSparseInitializer:
			err = walkSparse(f, fn)
		case GraphNode:
			var n *Message
			if n, err = f.Message(); err == nil {
				err = walkNode(n, fn)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func walkNode(n *Message, fn func(*Tensor) error) error {
	attrs, err := n.messages(NodeAttribute)
	if err != nil {
		return fmt.Errorf("onnxwire: node %q attribute: %w", n.getString(NodeName), err)
	}
	for _, a := range attrs {
		for _, f := range a.fields {
			var err error
			switch f.Num {
			case AttrT, AttrTensors:
				err = walkTensorField(f, fn)
			case AttrSparseTensor, AttrSparseTensors:
				err = walkSparse(f, fn)
			case AttrG, AttrGraphs:
				var sub *Message
				if sub, err = f.Message(); err == nil {
					err = walkGraph(sub, fn)
				}
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

func walkTensorField(f *Field, fn func(*Tensor) error) error {
	t, err := f.Message()
	if err != nil {
		return fmt.Errorf("onnxwire: tensor: %w", err)
	}
	return fn(&Tensor{t})
}

func walkSparse(f *Field, fn func(*Tensor) error) error {
	s, err := f.Message()
	if err != nil {
		return fmt.Errorf("onnxwire: sparse tensor: %w", err)
	}
	for _, sf := range s.fields {
		if sf.Num == SparseValues || sf.Num == SparseIndices {
			if err := walkTensorField(sf, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// SubgraphReferences returns every name a node inside a subgraph of g
// (recursively) reads, plus the subgraphs' output names. Outer-scope
// values a subgraph uses are among them, so callers can treat these names
// as "used elsewhere" before removing or rewriting a value of g.
func (g *Graph) SubgraphReferences() (map[string]bool, error) {
	refs := map[string]bool{}
	nodes, err := g.Nodes()
	if err != nil {
		return nil, err
	}
	for _, n := range nodes {
		if err := collectSubgraphRefs(n, refs); err != nil {
			return nil, err
		}
	}
	return refs, nil
}

func collectSubgraphRefs(n *Node, refs map[string]bool) error {
	return n.EachSubgraph(func(_ *Attribute, sg *Graph) error {
		outs, err := sg.Outputs()
		if err != nil {
			return err
		}
		for _, o := range outs {
			refs[o.Name()] = true
		}
		nodes, err := sg.Nodes()
		if err != nil {
			return err
		}
		for _, sn := range nodes {
			for _, in := range sn.Inputs() {
				refs[in] = true
			}
			if err := collectSubgraphRefs(sn, refs); err != nil {
				return err
			}
		}
		return nil
	})
}

// EachSubgraph calls fn for every subgraph held by n's attributes (the
// branches of If, the bodies of Loop and Scan), one level deep, in
// attribute order; the first error stops the walk and is returned.
func (n *Node) EachSubgraph(fn func(a *Attribute, sg *Graph) error) error {
	attrs, err := n.Attributes()
	if err != nil {
		return err
	}
	for _, a := range attrs {
		subs, err := a.Subgraphs()
		if err != nil {
			return err
		}
		for _, sg := range subs {
			if err := fn(a, sg); err != nil {
				return err
			}
		}
	}
	return nil
}
