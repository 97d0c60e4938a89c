package export

import (
	"fmt"
	"regexp"
	"slices"

	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/tensor"
)

// use is one input slot of a node.
type use struct {
	node *onnxwire.Node
	idx  int
}

// path is how a weight reaches one consumer input: through chain (Cast /
// Transpose nodes, source side first).
type path struct {
	consumer *onnxwire.Node
	idx      int
	chain    []*onnxwire.Node
	perm     []int64 // composed permutation of the chain's Transposes; nil if none
	subgraph string  // owner of the subgraph holding consumer ("" for the main graph)
}

// candidate is a patchable weight and every path to its consumers.
type candidate struct {
	source    string
	tensor    *onnxwire.Tensor
	constNode *onnxwire.Node // non-nil when the weight is a Constant's value
	dtype     tensor.DType
	dims      []int64
	paths     []path

	fold    bool // apply perm at export and drop the Transposes
	perm    []int64
	name    string        // exposed name
	blocked string        // why folding was impossible (for Notes)
	quant   *Quantization // set for quantized codes read through DequantizeLinear
}

// graphIndex holds the lookups target selection needs.
type graphIndex struct {
	g         *onnxwire.Graph
	nodes     []*onnxwire.Node
	producer  map[string]*onnxwire.Node
	users     map[string][]use
	inits     map[string]*onnxwire.Tensor
	consts    map[string]*onnxwire.Node
	outputs   map[string]bool
	subRefs   map[string]bool
	names     map[string]bool // every name in use, for fresh names
	inputs    map[string]bool
	nodeIndex map[*onnxwire.Node]int
}

// isNBits reports whether n is ONNX Runtime's MatMulNBits contrib op.
func isNBits(n *onnxwire.Node) bool {
	return n.Domain() == "com.microsoft" && n.OpType() == "MatMulNBits"
}

func isONNXOp(n *onnxwire.Node, ops ...string) bool {
	return n.IsONNX() && slices.Contains(ops, n.OpType())
}

func indexGraph(g *onnxwire.Graph) (*graphIndex, error) {
	ix := &graphIndex{g: g, producer: map[string]*onnxwire.Node{}, users: map[string][]use{},
		inits: map[string]*onnxwire.Tensor{}, consts: map[string]*onnxwire.Node{}, outputs: map[string]bool{},
		names: map[string]bool{}, inputs: map[string]bool{}, nodeIndex: map[*onnxwire.Node]int{}}
	var err error
	if ix.nodes, err = g.Nodes(); err != nil {
		return nil, err
	}
	for i, n := range ix.nodes {
		ix.nodeIndex[n] = i
		for k, in := range n.Inputs() {
			if in != "" {
				ix.users[in] = append(ix.users[in], use{n, k})
				ix.names[in] = true
			}
		}
		for _, out := range n.Outputs() {
			ix.producer[out] = n
			ix.names[out] = true
		}
		if isONNXOp(n, "Constant") && len(n.Outputs()) == 1 {
			a, err := n.Attr("value")
			if err != nil {
				return nil, err
			}
			if a != nil && a.Has(onnxwire.AttrT) {
				ix.consts[n.Outputs()[0]] = n
			}
		}
	}
	inits, err := g.Initializers()
	if err != nil {
		return nil, err
	}
	for _, t := range inits {
		ix.inits[t.Name()] = t
		ix.names[t.Name()] = true
	}
	for _, list := range []func() ([]*onnxwire.ValueInfo, error){g.Inputs, g.Outputs, g.ValueInfos} {
		vis, err := list()
		if err != nil {
			return nil, err
		}
		for _, v := range vis {
			ix.names[v.Name()] = true
		}
	}
	ins, _ := g.Inputs()
	for _, v := range ins {
		ix.inputs[v.Name()] = true
	}
	outs, _ := g.Outputs()
	for _, v := range outs {
		ix.outputs[v.Name()] = true
	}
	if ix.subRefs, err = g.SubgraphReferences(); err != nil {
		return nil, err
	}
	for n := range ix.subRefs {
		ix.names[n] = true
	}
	return ix, nil
}

// weightSlots lists the input indices of n that are weight inputs.
func weightSlots(n *onnxwire.Node) []int {
	if isNBits(n) {
		return []int{1} // B, the packed quantized weight
	}
	if !n.IsONNX() {
		return nil
	}
	switch n.OpType() {
	case "MatMul", "Gemm":
		return []int{0, 1}
	case "Conv":
		return []int{1}
	}
	return nil
}

// constantTensor returns the tensor behind name (initializer or Constant).
func (ix *graphIndex) constantTensor(name string) (*onnxwire.Tensor, *onnxwire.Node, error) {
	if t, ok := ix.inits[name]; ok {
		return t, nil, nil
	}
	if n, ok := ix.consts[name]; ok {
		a, err := n.Attr("value")
		if err != nil {
			return nil, nil, err
		}
		t, err := a.Tensor()
		return t, n, err
	}
	return nil, nil, nil
}

// findCandidates traces every weight slot back to a constant tensor.
func (ix *graphIndex) findCandidates() ([]*candidate, error) {
	bySource := map[string]*candidate{}
	var order []*candidate
	for _, n := range ix.nodes {
		ins := n.Inputs()
		for _, k := range weightSlots(n) {
			if k >= len(ins) || ins[k] == "" {
				continue
			}
			var chain []*onnxwire.Node
			cur := ins[k]
			var t *onnxwire.Tensor
			var cn *onnxwire.Node
			// the chain reached a DequantizeLinear (only its constant codes
			// may follow), or the consumer is a MatMulNBits, whose B is read
			// as it is stored (no chain)
			dq := isNBits(n)
			for depth := 0; depth < 32; depth++ {
				var err error
				if t, cn, err = ix.constantTensor(cur); err != nil {
					return nil, err
				}
				if t != nil || dq {
					break
				}
				p := ix.producer[cur]
				if p == nil || !isONNXOp(p, "Cast", "Transpose", "DequantizeLinear") || len(p.Inputs()) == 0 {
					break
				}
				dq = p.OpType() == "DequantizeLinear"
				chain = append([]*onnxwire.Node{p}, chain...)
				cur = p.Inputs()[0]
			}
			dims, ok, err := patchableDims(t, dq)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
			perm, err := chainPerm(chain, len(dims))
			if err != nil {
				return nil, err
			}
			order = addPath(bySource, order, cur, t, cn, dims, path{consumer: n, idx: k, chain: chain, perm: perm})
		}
	}
	return ix.addSubgraphCandidates(bySource, order)
}

// patchableDims returns t's dims and whether t can be a target: a
// non-empty tensor of rank >= 2 and a float type, or, when it is the codes
// input of a DequantizeLinear (quantized), an int8, uint8, int16 or uint16
// type. A nil t is not a target.
func patchableDims(t *onnxwire.Tensor, quantized bool) ([]int64, bool, error) {
	if t == nil {
		return nil, false, nil
	}
	dims, err := t.Dims()
	if err != nil {
		return nil, false, err
	}
	empty := false
	for _, d := range dims {
		empty = empty || d == 0
	}
	dt := t.DType()
	typeOK := dt.IsFloat() && !quantized || dt.IsQuantCode() && quantized
	return dims, len(dims) >= 2 && !empty && typeOK, nil
}

// addPath records p as a path of the candidate for source, creating the
// candidate on first sight; it returns the updated candidate order.
func addPath(bySource map[string]*candidate, order []*candidate, source string, t *onnxwire.Tensor, cn *onnxwire.Node, dims []int64, p path) []*candidate {
	c := bySource[source]
	if c == nil {
		c = &candidate{source: source, tensor: t, constNode: cn, dtype: t.DType(), dims: dims, name: source}
		bySource[source] = c
		order = append(order, c)
	}
	c.paths = append(c.paths, p)
	return order
}

// chainPerm composes the permutations of the Transposes in chain.
func chainPerm(chain []*onnxwire.Node, rank int) ([]int64, error) {
	var perm []int64
	for _, n := range chain {
		if n.OpType() != "Transpose" {
			continue
		}
		p := make([]int64, rank)
		a, err := n.Attr("perm")
		if err != nil {
			return nil, err
		}
		if a != nil {
			if p, err = a.Ints(); err != nil {
				return nil, err
			}
		} else {
			for i := range p {
				p[i] = int64(rank - 1 - i)
			}
		}
		if !isPerm(p, rank) {
			return nil, fmt.Errorf("export: Transpose %q: perm %v is not a permutation of rank %d", n.Name(), p, rank)
		}
		if perm == nil {
			perm = p
			continue
		}
		next := make([]int64, rank)
		for i := range next {
			next[i] = perm[p[i]]
		}
		perm = next
	}
	return perm, nil
}

func isPerm(p []int64, rank int) bool {
	if len(p) != rank {
		return false
	}
	seen := make([]bool, rank)
	for _, v := range p {
		if v < 0 || int(v) >= rank || seen[v] {
			return false
		}
		seen[v] = true
	}
	return true
}

// planFold decides whether c's Transposes can be folded, and its name.
func (ix *graphIndex) planFold(c *candidate) {
	hasT := false
	for _, p := range c.paths {
		if p.perm != nil {
			hasT = true
		}
	}
	if !hasT {
		return
	}
	for _, p := range c.paths {
		if len(p.chain) > 0 && p.chain[0].OpType() == "DequantizeLinear" {
			c.blocked = fmt.Sprintf("it is quantized: DequantizeLinear %q reads the codes, and its axis refers to their stored layout", p.chain[0].Name())
			return
		}
	}
	for _, p := range c.paths[1:] {
		if !slices.Equal(p.perm, c.paths[0].perm) {
			c.blocked = "its consumers see it with different permutations"
			return
		}
	}
	// every user of the weight and of each intermediate value must be on a path
	onPath := map[use]bool{}
	values := map[string]bool{c.source: true}
	for _, p := range c.paths {
		onPath[use{p.consumer, p.idx}] = true
		for _, n := range p.chain {
			if len(n.Outputs()) != 1 || len(n.Inputs()) != 1 {
				c.blocked = fmt.Sprintf("node %q has %d inputs and %d outputs", n.Name(), len(n.Inputs()), len(n.Outputs()))
				return
			}
			onPath[use{n, 0}] = true
			values[n.Outputs()[0]] = true
		}
	}
	for v := range values {
		if ix.outputs[v] || ix.subRefs[v] {
			c.blocked = fmt.Sprintf("%q is a graph output or used inside a subgraph", v)
			return
		}
		for _, u := range ix.users[v] {
			if !onPath[u] {
				c.blocked = fmt.Sprintf("%q is also used by node %q (%s)", v, u.node.Name(), u.node.OpType())
				return
			}
		}
	}
	c.fold = true
	c.perm = c.paths[0].perm
	c.name = ix.freshName(c.source + ".T")
}

func (ix *graphIndex) freshName(base string) string {
	name := base
	for i := 2; ix.names[name]; i++ {
		name = fmt.Sprintf("%s%d", base, i)
	}
	ix.names[name] = true
	return name
}

// exposedShape is the shape of the exposed tensor.
func (c *candidate) exposedShape() []int64 {
	if !c.fold {
		return slices.Clone(c.dims)
	}
	out := make([]int64, len(c.dims))
	for i, p := range c.perm {
		out[i] = c.dims[p]
	}
	return out
}

// matches reports whether re matches the exposed name, the source name or
// a consumer node name.
func (c *candidate) matches(re *regexp.Regexp) bool {
	if re == nil || re.MatchString(c.name) || re.MatchString(c.source) {
		return true
	}
	for _, p := range c.paths {
		if re.MatchString(p.consumer.Name()) {
			return true
		}
	}
	return false
}

// consumers describes c's paths for the manifest.
func (c *candidate) consumers() ([]Consumer, error) {
	out := make([]Consumer, 0, len(c.paths))
	for _, p := range c.paths {
		cons := Consumer{Node: p.consumer.Name(), OpType: p.consumer.OpType(), InputIndex: p.idx, Subgraph: p.subgraph}
		if outs := p.consumer.Outputs(); len(outs) > 0 {
			cons.Output = outs[0]
		}
		if cons.OpType == "Gemm" {
			ta, err := p.consumer.AttrInt("transA", 0)
			if err != nil {
				return nil, err
			}
			tb, err := p.consumer.AttrInt("transB", 0)
			if err != nil {
				return nil, err
			}
			a, b := ta != 0, tb != 0
			cons.TransA, cons.TransB = &a, &b
		}
		for _, n := range p.chain {
			if c.fold && n.OpType() == "Transpose" {
				continue
			}
			cons.Via = append(cons.Via, NodeRef{Node: n.Name(), OpType: n.OpType()})
		}
		out = append(out, cons)
	}
	return out, nil
}
