package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/pflag"

	"github.com/shira-ort/shira-ort/ort"
)

// providerFlags are the execution-provider flags of run, inspect and
// devicetest: --provider (repeatable, priority order) and
// --provider-fallback.
type providerFlags struct {
	specs    []string
	fallback bool
}

const providerUsage = "execution provider cpu|xnnpack|qnn|nnapi|coreml, optionally with options as NAME:KEY=VALUE,... " +
	"(e.g. qnn:backend_path=libQnnHtp.so,htp_performance_mode=burst or nnapi:fp16=1,cpu_disabled=1); " +
	"repeatable, in priority order; CPU always takes the nodes the others leave"

// register adds --provider and --provider-fallback to f.
func (p *providerFlags) register(f *pflag.FlagSet) {
	f.StringArrayVar(&p.specs, "provider", nil, providerUsage)
	f.BoolVar(&p.fallback, "provider-fallback", false, "run on CPU when a provider is missing from the ONNX Runtime build or fails to create the session (default: fail)")
}

// apply parses the flags into o.
func (p *providerFlags) apply(o *ort.Options) error {
	for _, s := range p.specs {
		prov, err := ort.ParseProvider(s)
		if err != nil {
			return fmt.Errorf("--provider: %w", err)
		}
		o.Providers = append(o.Providers, prov)
	}
	o.ProviderFallback = p.fallback
	return nil
}

// printProviders reports the providers a session fell back from (nothing
// when every requested one is active).
func printProviders(w io.Writer, st []ort.ProviderStatus) {
	var parts []string
	fell := false
	for _, s := range st {
		parts = append(parts, providerStatusText(s))
		fell = fell || !s.Active
	}
	if fell {
		fmt.Fprintf(w, "execution providers: %s\n", strings.Join(parts, "; "))
	}
}

// providerStatusText is "xnnpack: active" or "xnnpack: fell back to CPU:
// WHY". A provider only falls back when --provider-fallback is set, so WHY
// leaves out the advice ORT's error gives to set it.
func providerStatusText(st ort.ProviderStatus) string {
	if st.Active {
		return st.String()
	}
	return fmt.Sprintf("%s: fell back to CPU: %s", st.Provider, fallbackReason(st.Err))
}

// fallbackReason is why a provider fell back: for one missing from the
// ONNX Runtime build, what was checked and what the build has (without
// ort.ProviderUnavailableError's advice to set the fallback option);
// otherwise the error itself.
func fallbackReason(err error) string {
	var pu *ort.ProviderUnavailableError
	if !errors.As(err, &pu) {
		return fmt.Sprint(err)
	}
	why := fmt.Sprintf("%s; ONNX Runtime %s has %s", pu.Reason, pu.Version, strings.Join(pu.Available, ", "))
	if pu.Err != nil {
		why += ": " + pu.Err.Error()
	}
	return why
}

// inspectProviders is `inspect --providers`.
func inspectProviders(ctx context.Context, w io.Writer, path string, pf *providerFlags, asJSON bool) error {
	opts := &ort.Options{}
	if err := pf.apply(opts); err != nil {
		return err
	}
	avail, err := ort.AvailableProviders()
	if err != nil {
		return err
	}
	parts, err := ort.ProfilePartition(ctx, path, opts)
	if err != nil {
		return err
	}
	if asJSON {
		type status struct {
			Provider string `json:"provider"`
			Active   bool   `json:"active"`
			Error    string `json:"error,omitempty"`
		}
		type modeReport struct {
			*ort.Partition
			Providers []status `json:"providers"`
		}
		rep := struct {
			Version   string       `json:"onnxruntime_version"`
			Available []string     `json:"available_providers"`
			Sessions  []modeReport `json:"sessions"`
		}{Version: ort.Version(), Available: avail}
		for _, p := range parts {
			mr := modeReport{Partition: p}
			for _, st := range p.Providers {
				s := status{Provider: st.Provider.String(), Active: st.Active}
				if !st.Active {
					s.Error = fallbackReason(st.Err)
				}
				mr.Providers = append(mr.Providers, s)
			}
			rep.Sessions = append(rep.Sessions, mr)
		}
		return writeJSON(w, rep)
	}
	fmt.Fprintf(w, "ONNX Runtime %s, providers in this build: %s\n", ort.Version(), strings.Join(avail, ", "))
	for _, p := range parts {
		printPartition(w, p)
	}
	return nil
}

// printPartition renders one session's partition: its providers, the nodes
// each provider ran and, per exposed weight, where the nodes reading it ran.
func printPartition(w io.Writer, p *ort.Partition) {
	fmt.Fprintf(w, "%s session:\n", p.Mode)
	for _, st := range p.Providers {
		fmt.Fprintf(w, "  provider %s\n", providerStatusText(st))
	}
	provs := make([]string, 0, len(p.Count))
	for k := range p.Count {
		provs = append(provs, k)
	}
	sort.Strings(provs)
	for _, k := range provs {
		var nodes []string
		for _, n := range p.Nodes {
			if n.Provider == k {
				nodes = append(nodes, nodeText(n))
			}
		}
		fmt.Fprintf(w, "  %-28s %3d nodes: %s\n", k, p.Count[k], strings.Join(nodes, ", "))
	}
	for _, wp := range p.Weights {
		var readers []string
		for _, c := range wp.Consumers {
			if c.Provider == "" {
				readers = append(readers, nodeText(c)+", which ORT did not run under that name (fused into another node, compiled into a provider's subgraph, or not executed)")
			} else {
				readers = append(readers, nodeText(c)+" on "+c.Provider)
			}
		}
		fmt.Fprintf(w, "  weight %s: read by %s\n", wp.Weight, strings.Join(readers, "; "))
	}
}

// nodeText is a node as `"name" (OpType)`.
func nodeText(n ort.NodePlacement) string { return fmt.Sprintf("%q (%s)", n.Node, n.OpType) }
