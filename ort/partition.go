package ort

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/tensor"
)

// NodePlacement is a node ORT ran and the execution provider that ran it.
// Node names are those of ORT's optimized graph: fused nodes have new
// names, and a provider that compiles a subgraph (NNAPI, QNN, CoreML) shows
// as one node named after the provider.
type NodePlacement struct {
	Node     string `json:"node"`
	OpType   string `json:"op_type"`
	Provider string `json:"provider"`
}

// WeightPlacement says which provider runs the nodes that read an exposed
// weight (the consumers in the manifest). A consumer fused by ORT is
// reported as the fused node ORT names "[fused ]<consumer>/<fusion>"; one ORT did
// not run under its name (fused into a node named after another,
// compiled into a provider's subgraph, or in a branch the Run did not
// take) has Provider "".
type WeightPlacement struct {
	Weight    string          `json:"weight"`
	Consumers []NodePlacement `json:"consumers"`
}

// Partition is how ORT assigned a model's nodes to execution providers in
// one session mode.
type Partition struct {
	Mode      Mode              `json:"mode"`
	Providers []ProviderStatus  `json:"-"`
	Nodes     []NodePlacement   `json:"nodes"`
	Count     map[string]int    `json:"nodes_per_provider"`
	Weights   []WeightPlacement `json:"weights,omitempty"`
}

// ProfilePartition reports where ORT places the nodes of the model in dir
// (an export.Expose directory, or a plain .onnx file) with opts's execution
// providers, for each session mode that matters: ModeLive (the exposed
// weights are graph inputs, which an accelerator may leave to the CPU) and
// ModeBaked (they are constants, compiled into the accelerator's graph).
// opts.Mode ModeLive or ModeBaked profiles that mode only; ModeDefault and
// ModeHybrid profile both, live first. A plain .onnx file is profiled once.
//
// ORT exposes the assignment through its profiler: a session is created
// with profiling on, run once on zero-valued inputs (dynamic dimensions 1),
// and the "provider" of every node event in the profile is read.
func ProfilePartition(ctx context.Context, dir string, opts *Options) ([]*Partition, error) {
	if opts == nil {
		opts = &Options{}
	}
	tmp, err := os.MkdirTemp("", "shira-ort-profile")
	if err != nil {
		return nil, fmt.Errorf("ort: %w", err)
	}
	defer os.RemoveAll(tmp)
	o := *opts
	o.profilePrefix = filepath.Join(tmp, "profile")
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		s, err := OpenModel(ctx, dir, &o)
		if err != nil {
			return nil, err
		}
		defer s.Close()
		p, err := s.profile(ctx, nil)
		if err != nil {
			return nil, err
		}
		return []*Partition{p}, nil
	}
	m, err := export.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("ort: %w", err)
	}
	defer m.Close()
	modes := []Mode{ModeLive, ModeBaked}
	if opts.Mode == ModeLive || opts.Mode == ModeBaked {
		modes = []Mode{opts.Mode}
	}
	var out []*Partition
	for _, mode := range modes {
		o.Mode = mode
		s, err := OpenExported(ctx, m, &o)
		if err != nil {
			return nil, err
		}
		p, err := s.profile(ctx, m.Manifest())
		s.Close()
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// profile runs s once on zero inputs and reads the profile ORT wrote.
func (s *Session) profile(ctx context.Context, m *export.Manifest) (*Partition, error) {
	feeds := map[string]*tensor.Tensor{}
	for _, in := range s.inputs {
		shape := make([]int64, len(in.Shape))
		for i, d := range in.Shape {
			shape[i] = max(d, 1)
		}
		t, err := tensor.Zeros(in.DType, shape)
		if err != nil {
			return nil, fmt.Errorf("ort: profiling: input %s: %w", in.Name, err)
		}
		feeds[in.Name] = t
	}
	if _, err := s.Run(ctx, feeds); err != nil {
		return nil, fmt.Errorf("ort: profiling run: %w", err)
	}
	e := s.cur.Load()
	file, err := e.raw.EndProfiling()
	if err != nil {
		return nil, fmt.Errorf("ort: %w", err)
	}
	defer os.Remove(file)
	nodes, err := readProfile(file)
	if err != nil {
		return nil, err
	}
	p := &Partition{Mode: s.mode, Providers: s.Providers(), Nodes: nodes, Count: map[string]int{}}
	byName := map[string]NodePlacement{}
	for _, n := range nodes {
		p.Count[n.Provider]++
		byName[n.Node] = n
	}
	if m != nil {
		for _, t := range m.Tensors {
			wp := WeightPlacement{Weight: t.Name}
			for _, c := range t.Consumers {
				n, ok := byName[c.Node]
				if !ok { // ORT names a fused node "<first node>/<fusion>", sometimes "fused " first
					for _, cand := range nodes {
						if strings.HasPrefix(strings.TrimPrefix(cand.Node, "fused "), c.Node+"/") {
							n, ok = cand, true
							break
						}
					}
				}
				if !ok {
					n = NodePlacement{Node: c.Node, OpType: c.OpType}
				}
				wp.Consumers = append(wp.Consumers, n)
			}
			p.Weights = append(p.Weights, wp)
		}
	}
	return p, nil
}

// readProfile extracts node → provider from an ORT profile (Chrome trace
// JSON: events with cat "Node", name "<node>_kernel_time" and args
// op_name, provider), in first-run order.
func readProfile(path string) ([]NodePlacement, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ort: profile: %w", err)
	}
	var events []struct {
		Cat  string `json:"cat"`
		Name string `json:"name"`
		Args struct {
			OpName   string `json:"op_name"`
			Provider string `json:"provider"`
		} `json:"args"`
	}
	if err := json.Unmarshal(raw, &events); err != nil {
		return nil, fmt.Errorf("ort: profile %s: %w", path, err)
	}
	var out []NodePlacement
	seen := map[string]bool{}
	for _, ev := range events {
		if ev.Cat != "Node" || ev.Args.Provider == "" || !strings.HasSuffix(ev.Name, "_kernel_time") {
			continue
		}
		name := strings.TrimSuffix(ev.Name, "_kernel_time")
		if seen[name] {
			continue
		}
		seen[name] = true
		out = append(out, NodePlacement{Node: name, OpType: ev.Args.OpName, Provider: ev.Args.Provider})
	}
	return out, nil
}

// Summary renders p for people: providers, node counts per provider and,
// per exposed weight, where its consumers run.
func (p *Partition) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s session:\n", p.Mode)
	for _, st := range p.Providers {
		fmt.Fprintf(&b, "  provider %s\n", st)
	}
	provs := make([]string, 0, len(p.Count))
	for k := range p.Count {
		provs = append(provs, k)
	}
	sort.Strings(provs)
	for _, k := range provs {
		var names []string
		for _, n := range p.Nodes {
			if n.Provider == k {
				names = append(names, nodeText(n))
			}
		}
		fmt.Fprintf(&b, "  %-28s %3d nodes: %s\n", k, p.Count[k], strings.Join(names, ", "))
	}
	for _, w := range p.Weights {
		var parts []string
		for _, c := range w.Consumers {
			if c.Provider == "" {
				parts = append(parts, nodeText(c)+", which ORT did not run under that name (fused into another node, compiled into a provider's subgraph, or not executed)")
			} else {
				parts = append(parts, nodeText(c)+" on "+c.Provider)
			}
		}
		fmt.Fprintf(&b, "  weight %s: read by %s\n", w.Weight, strings.Join(parts, "; "))
	}
	return b.String()
}

// nodeText is a node as `"name" (OpType)`.
func nodeText(n NodePlacement) string { return fmt.Sprintf("%q (%s)", n.Node, n.OpType) }
