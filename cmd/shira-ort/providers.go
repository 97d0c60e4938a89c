package main

import (
	"context"
	"fmt"
	"io"
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
		parts = append(parts, s.String())
		fell = fell || !s.Active
	}
	if fell {
		fmt.Fprintf(w, "execution providers: %s\n", strings.Join(parts, "; "))
	}
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
					s.Error = st.Err.Error()
				}
				mr.Providers = append(mr.Providers, s)
			}
			rep.Sessions = append(rep.Sessions, mr)
		}
		return writeJSON(w, rep)
	}
	fmt.Fprintf(w, "ONNX Runtime %s, providers in this build: %s\n", ort.Version(), strings.Join(avail, ", "))
	for _, p := range parts {
		fmt.Fprint(w, p.Summary())
	}
	return nil
}
