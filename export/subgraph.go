package export

import (
	"fmt"

	"github.com/shira-ort/shira-ort/internal/onnxwire"
)

// subgraphUse is a node inside a control-flow subgraph (If, Loop, Scan, at
// any depth) and the outer-scope names it may read.
type subgraphUse struct {
	node  *onnxwire.Node
	owner string // "IfNode.then_branch", for the manifest
	local map[string]bool
}

// subgraphNodes lists every node of every subgraph below the main graph,
// with the names its own scopes define (so an outer-scope reference can be
// told from a local value).
func (ix *graphIndex) subgraphNodes() ([]subgraphUse, error) {
	var out []subgraphUse
	var walk func(nodes []*onnxwire.Node, outer map[string]bool) error
	walk = func(nodes []*onnxwire.Node, outer map[string]bool) error {
		for _, n := range nodes {
			err := n.EachSubgraph(func(a *onnxwire.Attribute, sg *onnxwire.Graph) error {
				local, err := scopeNames(sg, outer)
				if err != nil {
					return err
				}
				sn, err := sg.Nodes()
				if err != nil {
					return fmt.Errorf("subgraph %s.%s: %w", n.Name(), a.Name(), err)
				}
				for _, m := range sn {
					out = append(out, subgraphUse{node: m, owner: n.Name() + "." + a.Name(), local: local})
				}
				return walk(sn, local)
			})
			if err != nil {
				return err
			}
		}
		return nil
	}
	return out, walk(ix.nodes, map[string]bool{})
}

// scopeNames returns the names defined by g (inputs, initializers, node
// outputs) plus those of the enclosing subgraph scopes.
func scopeNames(g *onnxwire.Graph, outer map[string]bool) (map[string]bool, error) {
	local := make(map[string]bool, len(outer))
	for k := range outer {
		local[k] = true
	}
	ins, err := g.Inputs()
	if err != nil {
		return nil, err
	}
	for _, v := range ins {
		local[v.Name()] = true
	}
	inits, err := g.Initializers()
	if err != nil {
		return nil, err
	}
	for _, t := range inits {
		local[t.Name()] = true
	}
	nodes, err := g.Nodes()
	if err != nil {
		return nil, err
	}
	for _, n := range nodes {
		for _, o := range n.Outputs() {
			local[o] = true
		}
	}
	return local, nil
}

// addSubgraphCandidates adds the weights that subgraph MatMul/Gemm/Conv
// nodes read directly from the main graph's initializers or Constants
// (silero-vad keeps all its Conv weights behind an If). Such paths are
// never folded: the subgraph reference blocks it.
func (ix *graphIndex) addSubgraphCandidates(bySource map[string]*candidate, order []*candidate) ([]*candidate, error) {
	uses, err := ix.subgraphNodes()
	if err != nil {
		return nil, err
	}
	for _, u := range uses {
		ins := u.node.Inputs()
		for _, k := range weightSlots(u.node) {
			if k >= len(ins) || ins[k] == "" || u.local[ins[k]] {
				continue
			}
			t, cn, err := ix.constantTensor(ins[k])
			if err != nil {
				return nil, err
			}
			dims, ok, err := patchableDims(t, false)
			if err != nil {
				return nil, err
			}
			if ok {
				order = addPath(bySource, order, ins[k], t, cn, dims, path{consumer: u.node, idx: k, subgraph: u.owner})
			}
		}
	}
	return order, nil
}
