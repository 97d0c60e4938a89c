package peft

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/closest"
)

// ErrNoMatch is wrapped by Resolve's error for a module with no (or an
// ambiguous) exposed tensor.
var ErrNoMatch = errors.New("peft: no exposed tensor for module")

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
	m     *export.Manifest
	cands []candidate
}

type candidate struct {
	path  string
	entry int
}

// NewMapper indexes the exposed tensors of m by candidate module path.
func NewMapper(m *export.Manifest) *Mapper {
	mp := &Mapper{m: m}
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
// "model.layers.0.self_attn.q_proj", with or without "base_model.model.").
// fanInFanOut is ignored here; it only changes how indices are read.
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
		entries := map[int]candidate{}
		for _, c := range set {
			entries[c.entry] = c
		}
		if len(entries) == 1 {
			for _, c := range entries {
				return mp.target(module, c)
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
	return Target{}, fmt.Errorf("%w: %s; closest candidates: %s", ErrNoMatch, module, strings.Join(mp.closest(module, 5), "; "))
}

func (mp *Mapper) target(module string, c candidate) (Target, error) {
	e := &mp.m.Tensors[c.entry]
	if len(e.Shape) != 2 {
		return Target{}, fmt.Errorf("peft: module %s maps to %s of shape %v, want a rank-2 weight", module, e.Name, e.Shape)
	}
	var layout Layout
	for i, cons := range e.Consumers {
		var l Layout
		switch {
		case cons.OpType == "MatMul" && cons.InputIndex == 1:
			l = InOut
		case cons.OpType == "Gemm" && cons.InputIndex == 1:
			l = InOut
			if cons.TransB != nil && *cons.TransB {
				l = OutIn
			}
		case cons.OpType == "MatMul" && cons.InputIndex == 0:
			l = OutIn // y = W x
		case cons.OpType == "Gemm" && cons.InputIndex == 0:
			l = OutIn
			if cons.TransA != nil && *cons.TransA {
				l = InOut
			}
		default:
			return Target{}, fmt.Errorf("peft: module %s maps to %s read by %s %q (input %d); only nn.Linear weights (MatMul, Gemm) are supported", module, e.Name, cons.OpType, cons.Node, cons.InputIndex)
		}
		if i > 0 && l != layout {
			return Target{}, fmt.Errorf("peft: module %s maps to %s whose consumers read it in different layouts", module, e.Name)
		}
		layout = l
	}
	t := Target{Entry: e, Layout: layout, MatchedBy: c.path}
	if layout == InOut {
		t.In, t.Out = int(e.Shape[0]), int(e.Shape[1])
	} else {
		t.Out, t.In = int(e.Shape[0]), int(e.Shape[1])
	}
	return t, nil
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
				out = append(out, m.Name+" ("+t+")")
			}
		}
	}
	if len(out) == 0 {
		return []string{"(the model exposes no tensors)"}
	}
	return out
}
