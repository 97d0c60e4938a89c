package lorabranch

import (
	"errors"
	"fmt"
	"strings"

	"github.com/shira-ort/shira-ort/internal/closest"
	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/tensor"
)

// Suffixes of the branch parameters' names: weight W gets the graph inputs
// W+SuffixA [K, r] and W+SuffixB [r, N].
const (
	SuffixA = ".lora_A"
	SuffixB = ".lora_B"
)

// ErrTarget is wrapped by the errors of AddBranches for a target weight that
// cannot take a branch: unknown, not float32 rank 2, read by anything but
// MatMul's B input, already branched, or asked for twice or with a bad rank.
var ErrTarget = errors.New("lorabranch: weight cannot take a LoRA branch")

// Target asks for a LoRA branch of rank Rank on the weight named Weight (an
// initializer read by MatMul as B).
type Target struct {
	Weight string
	Rank   int
}

// Branch is a LoRA branch of a model (or, with Rank 0, a weight that can
// take one): the weight W [K, N] and the rank r of A [K, r] and B [r, N].
type Branch struct {
	Target
	K, N int
}

// ParamNames returns the names of the branch parameters (graph inputs and
// adapter parameters) of weight: weight+SuffixA and weight+SuffixB.
func ParamNames(weight string) (a, b string) { return weight + SuffixA, weight + SuffixB }

// graphInfo indexes the main graph for the checks and edits.
type graphInfo struct {
	m       *onnxwire.Model
	g       *onnxwire.Graph
	inits   map[string]*onnxwire.Tensor
	order   []string // initializer names in graph order
	inputs  map[string]bool
	outputs map[string]bool
	readers map[string][]reader
	subRefs map[string]bool
	// names holds every value and node name of the main graph, so new
	// names never collide with one
	names map[string]bool
}

// reader is a node input reading a value.
type reader struct {
	node  *onnxwire.Node
	index int
}

func index(model []byte) (*graphInfo, error) {
	m, err := onnxwire.ParseModel(model, "")
	if err != nil {
		return nil, fmt.Errorf("lorabranch: %w", err)
	}
	g, err := m.Graph()
	if err != nil {
		return nil, fmt.Errorf("lorabranch: %w", err)
	}
	gi := &graphInfo{m: m, g: g, inits: map[string]*onnxwire.Tensor{}, inputs: map[string]bool{},
		outputs: map[string]bool{}, readers: map[string][]reader{}, names: map[string]bool{}}
	inits, err := g.Initializers()
	if err != nil {
		return nil, fmt.Errorf("lorabranch: %w", err)
	}
	for _, t := range inits {
		if _, dup := gi.inits[t.Name()]; !dup {
			gi.order = append(gi.order, t.Name())
		}
		gi.inits[t.Name()] = t
		gi.names[t.Name()] = true
	}
	ins, err := g.Inputs()
	if err != nil {
		return nil, fmt.Errorf("lorabranch: %w", err)
	}
	for _, v := range ins {
		gi.inputs[v.Name()] = true
		gi.names[v.Name()] = true
	}
	outs, err := g.Outputs()
	if err != nil {
		return nil, fmt.Errorf("lorabranch: %w", err)
	}
	for _, v := range outs {
		gi.outputs[v.Name()] = true
		gi.names[v.Name()] = true
	}
	vis, err := g.ValueInfos()
	if err != nil {
		return nil, fmt.Errorf("lorabranch: %w", err)
	}
	for _, v := range vis {
		gi.names[v.Name()] = true
	}
	nodes, err := g.Nodes()
	if err != nil {
		return nil, fmt.Errorf("lorabranch: %w", err)
	}
	for _, n := range nodes {
		if n.Name() != "" {
			gi.names[n.Name()] = true
		}
		for i, in := range n.Inputs() {
			if in != "" {
				gi.readers[in] = append(gi.readers[in], reader{n, i})
			}
		}
		for _, out := range n.Outputs() {
			gi.names[out] = true
		}
	}
	if gi.subRefs, err = g.SubgraphReferences(); err != nil {
		return nil, fmt.Errorf("lorabranch: %w", err)
	}
	return gi, nil
}

// check returns weight's shape and its MatMul readers, or an error wrapping
// ErrTarget saying why it cannot take a branch.
func (gi *graphInfo) check(weight string) (k, n int, matmuls []*onnxwire.Node, err error) {
	t, ok := gi.inits[weight]
	if !ok {
		return 0, 0, nil, fmt.Errorf("%w: no initializer %s in the main graph%s", ErrTarget, closest.Quote(weight), gi.hint(weight))
	}
	if dt := t.DType(); dt != tensor.Float32 {
		return 0, 0, nil, fmt.Errorf("%w: %s is %v; only float32 weights are supported", ErrTarget, closest.Quote(weight), dt)
	}
	dims, err := t.Dims()
	if err != nil {
		return 0, 0, nil, fmt.Errorf("lorabranch: %w", err)
	}
	if len(dims) != 2 || dims[0] <= 0 || dims[1] <= 0 || dims[0] > 1<<31 || dims[1] > 1<<31 {
		return 0, 0, nil, fmt.Errorf("%w: %s has shape %v; only rank-2 [K, N] weights read by MatMul as B are supported", ErrTarget, closest.Quote(weight), dims)
	}
	// the branch's zeros take at most twice the weight's bytes (rank <=
	// min(K, N)): make sure those bytes are present before anything is
	// allocated for them
	if t.IsExternal() {
		ext, _, err := t.External()
		if err != nil {
			return 0, 0, nil, fmt.Errorf("lorabranch: %w", err)
		}
		if nb, err := t.NumBytes(); err != nil || (ext.Length >= 0 && ext.Length != nb) {
			return 0, 0, nil, fmt.Errorf("lorabranch: weight %s: external data of %d bytes for %v %v (%v)", closest.Quote(weight), ext.Length, t.DType(), dims, err)
		}
	} else if _, err := t.Data(""); err != nil {
		return 0, 0, nil, fmt.Errorf("lorabranch: %w", err)
	}
	if gi.subRefs[weight] {
		return 0, 0, nil, fmt.Errorf("%w: %s is read inside a control-flow subgraph (If/Loop/Scan); only main-graph MatMul readers are supported", ErrTarget, closest.Quote(weight))
	}
	if gi.outputs[weight] {
		return 0, 0, nil, fmt.Errorf("%w: %s is a graph output; only weights read by MatMul alone are supported", ErrTarget, closest.Quote(weight))
	}
	rs := gi.readers[weight]
	if len(rs) == 0 {
		return 0, 0, nil, fmt.Errorf("%w: no node reads %s", ErrTarget, closest.Quote(weight))
	}
	for _, r := range rs {
		if !r.node.IsONNX() || r.node.OpType() != "MatMul" || r.index != 1 {
			return 0, 0, nil, fmt.Errorf("%w: %s is read by %s node %s as input %d; only MatMul's B input (input 1) is supported",
				ErrTarget, closest.Quote(weight), opName(r.node), closest.Quote(r.node.Name()), r.index)
		}
		if len(r.node.Outputs()) != 1 || r.node.Outputs()[0] == "" {
			return 0, 0, nil, fmt.Errorf("lorabranch: MatMul node %s reading %s has outputs %q, want one", closest.Quote(r.node.Name()), closest.Quote(weight), r.node.Outputs())
		}
		matmuls = append(matmuls, r.node)
	}
	return int(dims[0]), int(dims[1]), matmuls, nil
}

// opName is a node's op type with its domain when not ONNX's.
func opName(n *onnxwire.Node) string {
	if n.IsONNX() {
		return n.OpType()
	}
	return n.Domain() + "." + n.OpType()
}

// hint suggests the nearest weights that can take a branch.
func (gi *graphInfo) hint(name string) string {
	var cands []string
	for _, w := range gi.order {
		if _, _, _, err := gi.check(w); err == nil && !gi.isParam(w) {
			cands = append(cands, w)
		}
	}
	var near []string
	for _, m := range closest.Rank(name, cands) {
		if len(near) == 3 {
			break
		}
		near = append(near, closest.Quote(m.Name))
	}
	if len(near) == 0 {
		return " (the model has no float32 MatMul-B weights)"
	}
	return " (did you mean " + strings.Join(near, ", ") + "?)"
}

// isParam reports whether name is a branch parameter of an existing branch:
// a graph input and initializer W+SuffixA or W+SuffixB whose W is an
// initializer too.
func (gi *graphInfo) isParam(name string) bool {
	for _, s := range []string{SuffixA, SuffixB} {
		if w, ok := strings.CutSuffix(name, s); ok && gi.inputs[name] {
			if _, ok := gi.inits[w]; ok {
				return true
			}
		}
	}
	return false
}

// Candidates returns, in initializer order, the weights of model that
// AddBranches accepts (float32 [K, N] initializers read only by MatMul as
// B), with Rank 0. The parameters of branches the model already has are
// not listed.
func Candidates(model []byte) ([]Branch, error) {
	gi, err := index(model)
	if err != nil {
		return nil, err
	}
	var out []Branch
	for _, w := range gi.order {
		if gi.isParam(w) {
			continue
		}
		if k, n, _, err := gi.check(w); err == nil {
			out = append(out, Branch{Target: Target{Weight: w}, K: k, N: n})
		}
	}
	return out, nil
}

// ForDensity returns a target for each weight of ws with the rank whose
// branch has as many parameters as a SHiRA adapter touching density of the
// weight's entries (RankForDensity).
func ForDensity(ws []Branch, density float64) []Target {
	out := make([]Target, len(ws))
	for i, w := range ws {
		out[i] = Target{Weight: w.Weight, Rank: RankForDensity(w.K, w.N, density)}
	}
	return out
}

// RankForDensity returns the LoRA rank with the parameter count of a SHiRA
// adapter touching density·K·N entries of a [K, N] weight: a rank-r branch
// holds r·(K+N) values, so r = round(density·K·N/(K+N)), at least 1 for a
// positive density (0 for density <= 0 or an empty weight).
func RankForDensity(k, n int, density float64) int {
	if !(density > 0) || k <= 0 || n <= 0 {
		return 0
	}
	r := density * float64(k) * float64(n) / float64(k+n)
	return max(1, int(r+0.5))
}

// AddBranches returns model with a zero LoRA branch on every target weight:
// each MatMul Y = X·W reading W as B becomes Y = X·W + (X·A)·B, with A
// [K, Rank] and B [Rank, N] new float32 zero initializers that are also
// graph inputs, named by ParamNames (see the package documentation). The
// new nodes follow their MatMul (the graph stays topologically sorted),
// initializers and inputs are appended after the existing ones, and
// everything else is kept byte for byte; tensor data is never read, so
// external data references stay as they are.
//
// A target must name a float32 rank-2 initializer of the main graph read
// only by MatMul nodes as input 1, without a branch yet, at most once in
// targets, with 1 <= Rank <= min(K, N); otherwise the error wraps
// ErrTarget. A new name that some value or node of the graph already has
// is an error too, and so is a result over the 2 GB protobuf limit (the
// zeros are inline), which is checked before they are allocated.
//
// Model bytes may be untrusted: an inline weight's data must be present
// (the zeros of its branch take at most twice its bytes), and an external
// weight's declared length must agree with its shape; its file is not
// read, so its declared shape is trusted up to the 2 GB limit.
func AddBranches(model []byte, targets []Target) ([]byte, error) {
	if len(targets) == 0 {
		return nil, fmt.Errorf("%w: no targets", ErrTarget)
	}
	gi, err := index(model)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	size := int64(len(model))
	for _, t := range targets {
		if seen[t.Weight] {
			return nil, fmt.Errorf("%w: %s is listed twice", ErrTarget, closest.Quote(t.Weight))
		}
		seen[t.Weight] = true
		if gi.isParam(t.Weight) {
			return nil, fmt.Errorf("%w: %s is itself a LoRA branch parameter", ErrTarget, closest.Quote(t.Weight))
		}
		k, n, mms, err := gi.check(t.Weight)
		if err != nil {
			return nil, err
		}
		if t.Rank < 1 || t.Rank > min(k, n) {
			return nil, fmt.Errorf("%w: %s [%d, %d]: rank %d is not in [1, %d]", ErrTarget, closest.Quote(t.Weight), k, n, t.Rank, min(k, n))
		}
		// the zeros are written inline: refuse before allocating them
		// what would not fit in a protobuf
		if size += 4 * int64(t.Rank) * int64(k+n); size > maxProto {
			return nil, fmt.Errorf("%w: with the branch of %s (rank %d) the model would exceed the 2 GB protobuf limit", ErrTarget, closest.Quote(t.Weight), t.Rank)
		}
		if err := gi.branch(t.Weight, k, n, t.Rank, mms); err != nil {
			return nil, err
		}
	}
	return gi.m.Encode(), nil
}

// maxProto is the largest protobuf message (2 GB - 1); a variable so the
// fuzz test can lower it.
var maxProto int64 = 1<<31 - 1

// fresh reserves name, failing if the graph already uses it.
func (gi *graphInfo) fresh(name, what string) error {
	if gi.names[name] {
		return fmt.Errorf("%w: the graph already has a value or node named %s (for %s)", ErrTarget, closest.Quote(name), what)
	}
	gi.names[name] = true
	return nil
}

// branch adds the parameters of weight and a branch on each of its MatMuls.
func (gi *graphInfo) branch(weight string, k, n, r int, mms []*onnxwire.Node) error {
	an, bn := ParamNames(weight)
	if gi.names[an] || gi.names[bn] {
		return fmt.Errorf("%w: %s already has a LoRA branch (or the graph uses the name %s or %s)", ErrTarget, closest.Quote(weight), closest.Quote(an), closest.Quote(bn))
	}
	if err := gi.fresh(an, "branch parameter A"); err != nil {
		return err
	}
	if err := gi.fresh(bn, "branch parameter B"); err != nil {
		return err
	}
	adims, bdims := []int64{int64(k), int64(r)}, []int64{int64(r), int64(n)}
	gi.g.AddInitializer(onnxwire.NewTensor(an, tensor.Float32, adims, make([]byte, 4*k*r)))
	gi.g.AddInitializer(onnxwire.NewTensor(bn, tensor.Float32, bdims, make([]byte, 4*r*n)))
	gi.g.AddInput(onnxwire.NewTensorValueInfo(an, tensor.Float32, adims, nil))
	gi.g.AddInput(onnxwire.NewTensorValueInfo(bn, tensor.Float32, bdims, nil))
	for _, mm := range mms {
		if err := gi.branchMatMul(mm, an, bn); err != nil {
			return fmt.Errorf("lorabranch: weight %s: %w", closest.Quote(weight), err)
		}
	}
	return nil
}

// branchMatMul turns mm (Y = X·W) into Y = X·W + (X·A)·B: the MatMul now
// writes Y+"/lora_base" and three nodes after it compute the rest.
func (gi *graphInfo) branchMatMul(mm *onnxwire.Node, an, bn string) error {
	x, y := mm.Inputs()[0], mm.Outputs()[0]
	prefix := mm.Name()
	if prefix == "" {
		prefix = y
	}
	base, xa, xab := y+"/lora_base", y+"/lora_XA", y+"/lora_XAB"
	nA, nB, nAdd := prefix+"/lora_A/MatMul", prefix+"/lora_B/MatMul", prefix+"/lora/Add"
	for _, s := range [...][2]string{{base, "the MatMul output"}, {xa, "X·A"}, {xab, "X·A·B"},
		{nA, "the X·A node"}, {nB, "the (X·A)·B node"}, {nAdd, "the branch Add node"}} {
		if err := gi.fresh(s[0], s[1]); err != nil {
			return err
		}
	}
	if err := setOutput0(mm, base); err != nil {
		return err
	}
	return insertAfter(gi.g, mm,
		onnxwire.NewNode(nA, "MatMul", "", []string{x, an}, []string{xa}),
		onnxwire.NewNode(nB, "MatMul", "", []string{xa, bn}, []string{xab}),
		onnxwire.NewNode(nAdd, "Add", "", []string{base, xab}, []string{y}))
}

// setOutput0 renames the first output of n in place.
func setOutput0(n *onnxwire.Node, name string) error {
	for _, f := range n.Fields() {
		if f.Num == onnxwire.NodeOutput {
			n.Replace(f, onnxwire.StringField(onnxwire.NodeOutput, name))
			return nil
		}
	}
	return fmt.Errorf("node %s has no output", closest.Quote(n.Name()))
}

// insertAfter inserts nodes, in order, right after n in g.
func insertAfter(g *onnxwire.Graph, n *onnxwire.Node, nodes ...*onnxwire.Node) error {
	for i, f := range g.Fields() {
		if f.Num != onnxwire.GraphNode {
			continue
		}
		msg, err := f.Message()
		if err != nil {
			return err
		}
		if msg != n.Message {
			continue
		}
		for j, nn := range nodes {
			g.Insert(i+1+j, onnxwire.MessageField(onnxwire.GraphNode, nn.Message))
		}
		return nil
	}
	return fmt.Errorf("node %s not found in the graph", closest.Quote(n.Name()))
}

// Branches returns the LoRA branches model has, in initializer order: every
// float32 initializer W [K, N] with initializers W+SuffixA [K, r] and
// W+SuffixB [r, N] that are also graph inputs (what AddBranches writes).
func Branches(model []byte) ([]Branch, error) {
	gi, err := index(model)
	if err != nil {
		return nil, err
	}
	var out []Branch
	for _, w := range gi.order {
		an, bn := ParamNames(w)
		at, bt := gi.inits[an], gi.inits[bn]
		if at == nil || bt == nil || !gi.inputs[an] || !gi.inputs[bn] {
			continue
		}
		wd, err1 := gi.inits[w].Dims()
		ad, err2 := at.Dims()
		bd, err3 := bt.Dims()
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("lorabranch: %w", err)
		}
		if len(wd) != 2 || len(ad) != 2 || len(bd) != 2 || ad[0] != wd[0] || bd[1] != wd[1] || ad[1] != bd[0] ||
			gi.inits[w].DType() != tensor.Float32 || at.DType() != tensor.Float32 || bt.DType() != tensor.Float32 ||
			ad[1] < 1 || wd[0] > 1<<31 || wd[1] > 1<<31 || ad[1] > 1<<31 {
			return nil, fmt.Errorf("lorabranch: branch of %s: W %v %v, A %v %v and B %v %v do not form [K, N] = [K, r]·[r, N] in float32",
				closest.Quote(w), gi.inits[w].DType(), wd, at.DType(), ad, bt.DType(), bd)
		}
		out = append(out, Branch{Target: Target{Weight: w, Rank: int(ad[1])}, K: int(wd[0]), N: int(wd[1])})
	}
	return out, nil
}
