package peft

import (
	"fmt"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/onnxwire"
)

// Limits of the graph walk: subgraph nesting (ORT and protobuf refuse
// deeper models) and the node visits of one path search.
const (
	maxSubgraphDepth = 100
	maxVisits        = 1 << 16
)

// graphIndex lists, per value name, the nodes reading it, over the main
// graph and every subgraph (subgraphs read outer values by name).
type graphIndex struct {
	users map[string][]use
}

type use struct {
	node *onnxwire.Node
	idx  int
}

func indexGraph(model *export.Model) (*graphIndex, error) {
	mo, err := onnxwire.ParseModel(model.Graph(), model.Dir())
	if err != nil {
		return nil, err
	}
	g, err := mo.Graph()
	if err != nil {
		return nil, err
	}
	ix := &graphIndex{users: map[string][]use{}}
	return ix, ix.add(g, 0)
}

func (ix *graphIndex) add(g *onnxwire.Graph, depth int) error {
	if depth > maxSubgraphDepth {
		return fmt.Errorf("subgraphs nested deeper than %d levels", maxSubgraphDepth)
	}
	nodes, err := g.Nodes()
	if err != nil {
		return err
	}
	for _, n := range nodes {
		for k, in := range n.Inputs() {
			if in != "" {
				ix.users[in] = append(ix.users[in], use{n, k})
			}
		}
		if err := n.EachSubgraph(func(_ *onnxwire.Attribute, sg *onnxwire.Graph) error {
			return ix.add(sg, depth+1)
		}); err != nil {
			return err
		}
	}
	return nil
}

// swaps follows the path from the value name to consumer c through c.Via
// in the graph (matching op types, node names and input indices) and
// reports whether its Transposes swap the two axes of a rank-2 tensor. It
// fails when no such path exists or when paths matching the manifest's
// description disagree.
func (ix *graphIndex) swaps(name string, c *export.Consumer) (bool, error) {
	found := map[bool]bool{}
	visits := 0
	var walk func(value string, via []export.NodeRef, swapped bool) error
	walk = func(value string, via []export.NodeRef, swapped bool) error {
		for _, u := range ix.users[value] {
			if visits++; visits > maxVisits {
				return fmt.Errorf("%w: more than %d nodes visited looking for %s", ErrLayout, maxVisits, describe(c))
			}
			n := u.node
			if len(via) == 0 {
				if n.OpType() == c.OpType && n.Name() == c.Node && u.idx == c.InputIndex {
					found[swapped] = true
				}
				continue
			}
			if n.OpType() != via[0].OpType || n.Name() != via[0].Node || u.idx != 0 || len(n.Outputs()) == 0 {
				continue
			}
			s := swapped
			if n.OpType() == "Transpose" {
				t, err := transposeSwaps(n)
				if err != nil {
					return err
				}
				s = s != t
			}
			if err := walk(n.Outputs()[0], via[1:], s); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(name, c.Via, false); err != nil {
		return false, err
	}
	switch len(found) {
	case 0:
		return false, fmt.Errorf("%w: the graph has no path from %s to %s", ErrLayout, name, describe(c))
	case 2:
		return false, fmt.Errorf("%w: the graph has several paths from %s to %s that transpose it differently", ErrLayout, name, describe(c))
	}
	return found[true], nil
}

// transposeSwaps reports whether the rank-2 Transpose n swaps its axes:
// perm [1, 0] or absent (reversed axes) does, [0, 1] does not.
func transposeSwaps(n *onnxwire.Node) (bool, error) {
	a, err := n.Attr("perm")
	if err != nil {
		return false, fmt.Errorf("%w: Transpose %q: %w", ErrLayout, n.Name(), err)
	}
	if a == nil {
		return true, nil
	}
	p, err := a.Ints()
	if err != nil {
		return false, fmt.Errorf("%w: Transpose %q: %w", ErrLayout, n.Name(), err)
	}
	switch {
	case len(p) == 2 && p[0] == 1 && p[1] == 0:
		return true, nil
	case len(p) == 2 && p[0] == 0 && p[1] == 1:
		return false, nil
	}
	return false, fmt.Errorf("%w: Transpose %q has perm %v, not a permutation of a rank-2 weight", ErrLayout, n.Name(), p)
}
