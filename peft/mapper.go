package peft

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/closest"
)

// ErrNoMatch is wrapped by Resolve's error for a module with no (or an
// ambiguous) exposed tensor.
var ErrNoMatch = errors.New("peft: no exposed tensor for module")

// ErrLayout is wrapped by Resolve's error when a module's exposed tensor
// was found but it is not an nn.Linear weight, or how it holds the
// module's [out, in] matrix cannot be told (consumers that read it in
// different orientations, a Transpose whose permutation is unknown).
var ErrLayout = errors.New("peft: cannot tell how the exposed tensor holds the module's weight")

// Layout says how an exposed rank-2 tensor stores a module's weight.
type Layout int

const (
	// OutIn is nn.Linear's own layout, [out, in] (Gemm with transB=1).
	OutIn Layout = iota
	// InOut is the transposed layout, [in, out] (MatMul's B).
	InOut
)

// String returns "[out,in]" or "[in,out]".
func (l Layout) String() string {
	if l == InOut {
		return "[in,out]"
	}
	return "[out,in]"
}

// flip returns the other layout.
func (l Layout) flip() Layout { return 1 - l }

// Target is the exposed tensor holding a module's weight.
type Target struct {
	// Entry is the manifest entry of the exposed tensor.
	Entry *export.TensorEntry
	// Layout is how Entry stores the weight; Out and In are its features.
	Layout  Layout
	Out, In int
	// MatchedBy is the candidate path that matched (for reports).
	MatchedBy string
}

// Flat returns the flat index into the exposed tensor of weight element
// (out row o, in column i).
func (t *Target) Flat(o, i int64) int64 {
	if t.Layout == InOut {
		return i*int64(t.Out) + o
	}
	return o*int64(t.In) + i
}

// Mapper resolves PEFT module paths to exposed tensors.
type Mapper struct {
	model *export.Model
	m     *export.Manifest
	cands []candidate

	graphOnce sync.Once
	graph     *graphIndex // read from model.onnx on first need
	graphErr  error
}

type candidate struct {
	path  string
	entry int
}

// NewMapper indexes the exposed tensors of model by candidate module path.
// The graph is read only when a consumer reads a tensor through a
// Transpose that export could not fold, to learn its permutation.
func NewMapper(model *export.Model) *Mapper {
	m := model.Manifest()
	mp := &Mapper{model: model, m: m}
	for i, e := range m.Tensors {
		seen := map[string]bool{}
		add := func(p string) {
			if p != "" && !seen[p] {
				seen[p] = true
				mp.cands = append(mp.cands, candidate{p, i})
			}
		}
		for _, c := range e.Consumers {
			add(nodeModule(c.Node))
		}
		add(strings.TrimSuffix(e.Name, ".weight"))
		add(strings.TrimSuffix(e.Source.Name, ".weight"))
	}
	return mp
}

// nodeModule turns a torch-exported node name
// "/model/layers.0/self_attn/q_proj/MatMul" into the module path
// "model.layers.0.self_attn.q_proj" ("" when the name has no scope).
func nodeModule(node string) string {
	if !strings.HasPrefix(node, "/") {
		return ""
	}
	parts := strings.Split(strings.Trim(node, "/"), "/")
	if len(parts) < 2 {
		return ""
	}
	return strings.Join(parts[:len(parts)-1], ".")
}

func dotSuffix(long, short string) bool {
	return long == short || strings.HasSuffix(long, "."+short)
}

// Resolve returns the exposed tensor of module (a path like
// "model.layers.0.self_attn.q_proj", with or without "base_model.model.")
// and how it holds the module's [out, in] weight. That layout is the one
// the module's own consumer sees: its op (MatMul's B and Gemm's B without
// transB read [in, out]; Gemm's B with transB=1 and MatMul's or Gemm's A
// read [out, in]) composed with the Transposes left between the tensor and
// the consumer. When the tensor has several consumers (one weight read by
// two linear layers, directly and through a Transpose), the ones whose
// node names name the module decide; the others are ignored. Patching the
// tensor changes what every reader sees (a tied embedding's Gather too,
// which the manifest does not list as a consumer), as merging into a tied
// torch Parameter does. An error wraps ErrNoMatch when
// no tensor (or more than one) matches, ErrLayout when the layout cannot be
// told. fan_in_fan_out does not change the layout; it only changes how
// SHiRA indices are read.
func (mp *Mapper) Resolve(module string) (Target, error) {
	module = strings.TrimPrefix(module, keyPrefix)
	var exact, suffix []candidate
	for _, c := range mp.cands {
		switch {
		case c.path == module:
			exact = append(exact, c)
		case dotSuffix(c.path, module) || dotSuffix(module, c.path):
			suffix = append(suffix, c)
		}
	}
	for _, set := range [][]candidate{exact, suffix} {
		entries := map[int][]string{} // entry -> the matching paths
		for _, c := range set {
			entries[c.entry] = append(entries[c.entry], c.path)
		}
		if len(entries) == 1 {
			for i, paths := range entries {
				return mp.target(module, i, paths)
			}
		}
		if len(entries) > 1 {
			var names []string
			for i := range entries {
				names = append(names, mp.m.Tensors[i].Name)
			}
			sort.Strings(names)
			return Target{}, fmt.Errorf("%w: %s matches several exposed tensors: %s", ErrNoMatch, module, strings.Join(names, ", "))
		}
	}
	return Target{}, fmt.Errorf("%w: %s; closest candidates: %s", ErrNoMatch, closest.Elide(module), strings.Join(mp.closest(module, 5), "; "))
}

// target builds the Target of module in entry i, which it matched through
// paths.
func (mp *Mapper) target(module string, i int, paths []string) (Target, error) {
	e := &mp.m.Tensors[i]
	shape := e.LogicalShape() // [K, N] for a MatMulNBits weight
	if len(shape) != 2 {
		return Target{}, fmt.Errorf("%w: module %s maps to %s of shape %v, want a rank-2 weight", ErrLayout, module, e.Name, shape)
	}
	if len(e.Consumers) == 0 {
		return Target{}, fmt.Errorf("%w: module %s maps to %s, which no node reads", ErrLayout, module, e.Name)
	}
	// the consumers named after the module; none: the name matched the
	// tensor itself, and every consumer must agree
	var mine []*export.Consumer
	for k := range e.Consumers {
		if slices.Contains(paths, nodeModule(e.Consumers[k].Node)) {
			mine = append(mine, &e.Consumers[k])
		}
	}
	byName := len(mine) > 0
	if !byName {
		for k := range e.Consumers {
			mine = append(mine, &e.Consumers[k])
		}
	}
	var layout Layout
	for k, c := range mine {
		l, err := mp.consumerLayout(e, c)
		if err != nil {
			return Target{}, fmt.Errorf("module %s maps to %s: %w", module, e.Name, err)
		}
		if k > 0 && l != layout {
			why := "no consumer's node name names the module, so which one is the module's cannot be told"
			if byName {
				why = "they are all named after the module"
			}
			return Target{}, fmt.Errorf("%w: module %s maps to %s, which %s reads as %v and %s as %v; %s",
				ErrLayout, module, e.Name, describe(mine[0]), layout, describe(c), l, why)
		}
		layout = l
	}
	t := Target{Entry: e, Layout: layout, MatchedBy: paths[0]}
	if layout == InOut {
		t.In, t.Out = int(shape[0]), int(shape[1])
	} else {
		t.Out, t.In = int(shape[0]), int(shape[1])
	}
	return t, nil
}

// consumerLayout returns how the exposed tensor e holds the [out, in]
// weight that consumer c reads as an nn.Linear weight.
func (mp *Mapper) consumerLayout(e *export.TensorEntry, c *export.Consumer) (Layout, error) {
	if c.OpType == "MatMulNBits" && c.InputIndex == 1 {
		// B is indexed as the [K, N] = [in, out] weight it stands for
		return InOut, nil
	}
	if c.OpType != "MatMul" && c.OpType != "Gemm" || c.InputIndex > 1 {
		return 0, fmt.Errorf("%w: it is read by %s; only nn.Linear weights (MatMul, Gemm, MatMulNBits) are supported", ErrLayout, describe(c))
	}
	// B (y = x W) reads [in, out], A (y = W x) reads [out, in]; Gemm's
	// transB or transA transposes it
	l, trans := InOut, c.TransB
	if c.InputIndex == 0 {
		l, trans = OutIn, c.TransA
	}
	if c.OpType == "Gemm" && trans != nil && *trans {
		l = l.flip()
	}
	swapped, err := mp.viaSwaps(e, c)
	if err != nil {
		return 0, err
	}
	if swapped {
		l = l.flip()
	}
	return l, nil
}

// viaSwaps reports whether the nodes between e and c (c.Via) transpose
// the tensor's two axes. Casts and DequantizeLinear (a quantized weight's
// codes, element for element) keep them; Transposes are looked up in the
// graph for their permutations (the manifest does not record them).
func (mp *Mapper) viaSwaps(e *export.TensorEntry, c *export.Consumer) (bool, error) {
	hasT := false
	for _, v := range c.Via {
		switch v.OpType {
		case "Cast", "DequantizeLinear":
		case "Transpose":
			hasT = true
		default:
			return false, fmt.Errorf("%w: %s reads it through %s %q", ErrLayout, describe(c), v.OpType, v.Node)
		}
	}
	if !hasT {
		return false, nil
	}
	mp.graphOnce.Do(func() { mp.graph, mp.graphErr = indexGraph(mp.model) })
	if mp.graphErr != nil {
		return false, fmt.Errorf("%w: reading the permutations of %s: %w", ErrLayout, describe(c), mp.graphErr)
	}
	return mp.graph.swaps(e.Name, c)
}

// describe names a consumer and the nodes it reads the tensor through,
// e.g. `MatMul "/lm_head/MatMul" (input 1) through Transpose "/lm_head/Transpose"`.
func describe(c *export.Consumer) string {
	s := fmt.Sprintf("%s %q (input %d)", c.OpType, c.Node, c.InputIndex)
	for k, v := range c.Via {
		sep := ", "
		if k == 0 {
			sep = " through "
		}
		s += fmt.Sprintf("%s%s %q", sep, v.OpType, v.Node)
	}
	return s
}

// closest lists up to n candidates nearest to module by edit distance,
// each as "path (tensor)".
func (mp *Mapper) closest(module string, n int) []string {
	paths := make([]string, len(mp.cands))
	tensors := map[string][]string{} // path -> the exposed tensors it names
	for i, c := range mp.cands {
		paths[i] = c.path
		tensors[c.path] = append(tensors[c.path], mp.m.Tensors[c.entry].Name)
	}
	var out []string
	for _, m := range closest.Rank(module, paths) {
		for _, t := range tensors[m.Name] {
			if len(out) < n {
				out = append(out, closest.Elide(m.Name)+" ("+closest.Elide(t)+")")
			}
		}
	}
	if len(out) == 0 {
		return []string{"(the model exposes no tensors)"}
	}
	return out
}
