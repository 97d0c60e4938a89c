package ort

import (
	"fmt"
	"runtime"
	"slices"
	"strings"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/closest"
	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/internal/ortshim"
	"github.com/shira-ort/shira-ort/tensor"
)

// packedVersions are the ONNX Runtime major.minor versions whose packed
// SGEMM weight layout was checked: 1.24 by this repository's tests, 1.30
// by the probe described in docs/session-modes.md. Open identifies every
// buffer by content anyway; an unlisted version falls back to hybrid.
var packedVersions = []string{"1.24", "1.30"}

// packedOrientations returns, for every exposed weight, the orientations
// in which ORT's CPU MatMul/Gemm kernels are expected to prepack it (false:
// the weight is B as stored, [K, N]; true: B is its transpose), or, when
// some weight's packed form could not be patched, why not (reason != "").
//
// A 4-bit MatMulNBits weight qualifies when only MatMulNBits nodes read it,
// at accuracy_level 0 to 3 (nbitsUses); an 8-bit QDQ weight when its
// DequantizeLinear feeds only MatMuls as B (qgemmUses: ORT then runs
// QLinearMatMul if the activations are quantized too, which the content
// check at Open finds out). Both get the single orientation false.
//
// A float weight qualifies when it is a rank-2 float32 tensor and every reader of
// it in the graph is a MatMul or Gemm taking it as B, directly or through
// Transposes (which ORT folds into a transposed constant, or into the
// kernel's transB, before packing), none followed by a BatchNormalization
// (which ORT may fold into a copy of the weight). Anything else that reads
// it (a Gather of a tied embedding, a Conv, a graph output, a subgraph)
// would read a copy the packed patch never reaches.
func packedOrientations(m *export.Model, ws []*weight) (map[string][]bool, string) {
	if runtime.GOARCH != "amd64" {
		return nil, fmt.Sprintf("packed weights are patched on x86-64 only; on %s MLAS may pack through other kernels (KleidiAI on ARM64) in another layout", runtime.GOARCH)
	}
	if v := ortshim.Version(); !versionListed(v) {
		return nil, fmt.Sprintf("ONNX Runtime %s is not a version whose packed weight layout was checked (%s)", v, strings.Join(packedVersions, ", "))
	}
	model, err := onnxwire.ParseModel(m.Graph(), m.Dir())
	if err != nil {
		return nil, fmt.Sprintf("reading the graph: %v", err)
	}
	g, err := model.Graph()
	if err != nil {
		return nil, fmt.Sprintf("reading the graph: %v", err)
	}
	ix, err := newUseIndex(g)
	if err != nil {
		return nil, fmt.Sprintf("reading the graph: %v", err)
	}
	out := make(map[string][]bool, len(ws))
	for _, w := range ws {
		name := closest.Quote(w.info.Name)
		if q := w.info.Quant; q != nil && q.Form == export.QuantNBits {
			if why := ix.nbitsUses(w.info.Name, q); why != "" {
				return nil, fmt.Sprintf("weight %s %s", name, why)
			}
			out[w.info.Name] = []bool{false}
			continue
		}
		if q := w.info.Quant; q != nil {
			if why := ix.qgemmUses(w, q); why != "" {
				return nil, fmt.Sprintf("weight %s %s", name, why)
			}
			out[w.info.Name] = []bool{false}
			continue
		}
		if !w.info.DType.IsFloat() {
			return nil, fmt.Sprintf("weight %s is %v: only float weights are patched in their packed form", name, w.info.DType)
		}
		if len(w.info.Shape) != 2 {
			for _, u := range ix.users[w.info.Name] {
				if u.node.OpType() == "Conv" || u.node.OpType() == "ConvTranspose" {
					return nil, fmt.Sprintf("weight %s is a %s weight: ORT reorders it (NCHWc blocks) into memory that is not allocated through the session's allocator, so the copy it computes with cannot be found and patched", name, u.node.OpType())
				}
			}
			return nil, fmt.Sprintf("weight %s has rank %d: only rank-2 MatMul/Gemm weights are patched in their packed form", name, len(w.info.Shape))
		}
		var orient []bool
		if why := ix.packedUses(w.info.Name, w.info.DType, false, 0, &orient); why != "" {
			return nil, fmt.Sprintf("weight %s %s", name, why)
		}
		if len(orient) == 0 {
			return nil, fmt.Sprintf("weight %s is read by no node", name)
		}
		out[w.info.Name] = orient
	}
	return out, ""
}

func versionListed(v string) bool {
	parts := strings.SplitN(v, ".", 3)
	return len(parts) >= 2 && slices.Contains(packedVersions, parts[0]+"."+parts[1])
}

// useIndex finds the readers of a value in the main graph.
type useIndex struct {
	users   map[string][]nodeUse
	outputs map[string]bool
	subRefs map[string]bool
}

type nodeUse struct {
	node *onnxwire.Node
	idx  int
}

func newUseIndex(g *onnxwire.Graph) (*useIndex, error) {
	ix := &useIndex{users: map[string][]nodeUse{}, outputs: map[string]bool{}}
	nodes, err := g.Nodes()
	if err != nil {
		return nil, err
	}
	for _, n := range nodes {
		for k, in := range n.Inputs() {
			if in != "" {
				ix.users[in] = append(ix.users[in], nodeUse{n, k})
			}
		}
	}
	outs, err := g.Outputs()
	if err != nil {
		return nil, err
	}
	for _, o := range outs {
		ix.outputs[o.Name()] = true
	}
	if ix.subRefs, err = g.SubgraphReferences(); err != nil {
		return nil, err
	}
	return ix, nil
}

// packedUses adds to orient the orientation of every MatMul/Gemm reading
// value (which is the weight, transposed when trans, of dtype dt) as B, or
// says why a reader is not one. A float16 or bfloat16 weight may be read
// directly (ORT's CPU kernels compute in float32: it inserts a Cast, which
// it folds into a float32 copy before packing) or through Casts to float32
// (also folded). depth bounds Transpose and Cast chains.
func (ix *useIndex) packedUses(value string, dt tensor.DType, trans bool, depth int, orient *[]bool) string {
	if depth > 8 {
		return "is read through more than 8 Transposes and Casts"
	}
	if ix.outputs[value] {
		return fmt.Sprintf("is a graph output (through %s)", closest.Quote(value))
	}
	if ix.subRefs[value] {
		return "is read inside a subgraph"
	}
	for _, u := range ix.users[value] {
		n := u.node
		desc := fmt.Sprintf("%s node %s (input %d)", n.OpType(), closest.Quote(n.Name()), u.idx)
		if !n.IsONNX() {
			return "is read by " + desc + " of domain " + closest.Quote(n.Domain()) + ", which ORT does not prepack as an SGEMM weight"
		}
		switch {
		case n.OpType() == "MatMul" && u.idx == 1:
			add(orient, trans)
		case n.OpType() == "Gemm" && u.idx == 1:
			tb, err := n.AttrInt("transB", 0)
			if err != nil {
				return "is read by " + desc + ": " + err.Error()
			}
			add(orient, trans != (tb != 0))
		case n.OpType() == "Transpose" && u.idx == 0:
			perm, err := transposePerm(n)
			if err != nil {
				return "is read by " + desc + ": " + err.Error()
			}
			if !slices.Equal(perm, []int64{1, 0}) {
				return fmt.Sprintf("is read by %s with perm %v", desc, perm)
			}
			if why := ix.packedUses(n.Outputs()[0], dt, !trans, depth+1, orient); why != "" {
				return why
			}
			continue
		case n.OpType() == "Cast" && u.idx == 0 && dt != tensor.Float32 && len(n.Outputs()) == 1:
			to, err := n.AttrInt("to", 0)
			if err != nil {
				return "is read by " + desc + ": " + err.Error()
			}
			if tensor.DType(to) != tensor.Float32 {
				return fmt.Sprintf("is read by %s casting it to %v; only a cast to float32 is folded before packing", desc, tensor.DType(to))
			}
			if why := ix.packedUses(n.Outputs()[0], tensor.Float32, trans, depth+1, orient); why != "" {
				return why
			}
			continue
		default:
			return "is read by " + desc + ", which ORT does not prepack as an SGEMM weight: it would read a copy the packed patch never reaches"
		}
		for _, out := range n.Outputs() {
			for _, next := range ix.users[out] {
				if next.node.IsONNX() && next.node.OpType() == "BatchNormalization" {
					return fmt.Sprintf("feeds %s, followed by BatchNormalization node %s, which ORT may fold into a copy of the weight", desc, closest.Quote(next.node.Name()))
				}
			}
		}
	}
	return ""
}

// nbitsUses says why the MatMulNBits weight value (described by q) would
// not be prepacked in the layout mlaspack.NBitsLayout describes, or "":
// 4 bits, float32 compute (accuracy_level 0 to 3; at 4 ORT packs B with
// its scales and block sums for int8 compute, interleaving columns), read
// only as B by MatMulNBits nodes.
func (ix *useIndex) nbitsUses(value string, q *export.Quantization) string {
	if q.Bits != 4 {
		return fmt.Sprintf("is a %d-bit MatMulNBits weight: ORT prepacks only 4-bit ones (it reads this one as stored, which only a live or rebuilt session patches)", q.Bits)
	}
	if q.AccuracyLevel >= 4 {
		return fmt.Sprintf("is read by MatMulNBits %s at accuracy_level %d: ORT packs it with its scales and block sums for int8 compute, a layout shira-ort does not patch", closest.Quote(q.Node), q.AccuracyLevel)
	}
	if ix.outputs[value] {
		return "is a graph output"
	}
	if ix.subRefs[value] {
		return "is read inside a subgraph"
	}
	users := ix.users[value]
	if len(users) == 0 {
		return "is read by no node"
	}
	for _, u := range users {
		if n := u.node; n.OpType() != "MatMulNBits" || n.Domain() != "com.microsoft" || u.idx != 1 {
			return fmt.Sprintf("is read by %s node %s (input %d), which would read a copy the packed patch never reaches", n.OpType(), closest.Quote(n.Name()), u.idx)
		}
	}
	return ""
}

// qgemmUses says why the QDQ weight w (described by q) would not be
// prepacked as a QLinearMatMul's B (mlaspack.QGemmLayout), or "": 8-bit
// codes [K, N], per tensor or per column (axis 1), read only by its
// DequantizeLinear, whose output only MatMuls read as B. Whether ORT fuses
// them into QLinearMatMul (it does when the activations are quantized
// too) shows at Open: a weight it does not prepack has no matching buffer.
func (ix *useIndex) qgemmUses(w *weight, q *export.Quantization) string {
	if w.info.DType != tensor.Int8 && w.info.DType != tensor.Uint8 {
		return fmt.Sprintf("is a QDQ weight of %v codes: only 8-bit codes are prepacked (QLinearMatMul)", w.info.DType)
	}
	if len(w.info.Shape) != 2 {
		return fmt.Sprintf("is a QDQ weight of rank %d: only [K, N] MatMul weights are patched in their packed form", len(w.info.Shape))
	}
	if len(q.Scales) > 1 && q.Axis != 1 && q.Axis != -1 {
		return fmt.Sprintf("is quantized per axis %d: QLinearMatMul prepacks per-column (axis 1) or per-tensor weights", q.Axis)
	}
	if ix.outputs[w.info.Name] || ix.subRefs[w.info.Name] {
		return "is a graph output or read inside a subgraph"
	}
	users := ix.users[w.info.Name]
	if len(users) != 1 || users[0].node.OpType() != "DequantizeLinear" || users[0].idx != 0 {
		return "is read by other nodes than its DequantizeLinear"
	}
	dq := users[0].node
	out := dq.Outputs()[0]
	if ix.outputs[out] || ix.subRefs[out] || len(ix.users[out]) == 0 {
		return "is dequantized into a graph output, a subgraph or nothing"
	}
	for _, u := range ix.users[out] {
		if u.node.OpType() != "MatMul" || !u.node.IsONNX() || u.idx != 1 {
			return fmt.Sprintf("is dequantized for %s node %s (input %d): only a MatMul's B is prepacked as a QLinearMatMul weight", u.node.OpType(), closest.Quote(u.node.Name()), u.idx)
		}
	}
	return ""
}

func add(orient *[]bool, trans bool) {
	if !slices.Contains(*orient, trans) {
		*orient = append(*orient, trans)
	}
}

// transposePerm returns a Transpose node's perm (default: reversed axes
// of a rank-2 input, [1 0]). It must have one output.
func transposePerm(n *onnxwire.Node) ([]int64, error) {
	if len(n.Outputs()) != 1 {
		return nil, fmt.Errorf("%d outputs", len(n.Outputs()))
	}
	a, err := n.Attr("perm")
	if err != nil {
		return nil, err
	}
	if a == nil {
		return []int64{1, 0}, nil
	}
	return a.Ints()
}
