package ort

import (
	"fmt"
	"strings"

	onnxruntime "github.com/yalue/onnxruntime_go"
)

// OptimizationLevel is ORT's graph optimization level. The zero value is
// OptimizeAll, ORT's own default.
type OptimizationLevel int

// The graph optimization levels.
const (
	OptimizeAll      OptimizationLevel = iota // every optimization (default)
	OptimizeDisable                           // no graph optimization
	OptimizeBasic                             // constant folding, redundant node removal
	OptimizeExtended                          // plus fusions
)

var levelNames = map[OptimizationLevel]string{
	OptimizeAll: "all", OptimizeDisable: "disable", OptimizeBasic: "basic", OptimizeExtended: "extended",
}

// String returns "all", "disable", "basic" or "extended".
func (l OptimizationLevel) String() string {
	if n, ok := levelNames[l]; ok {
		return n
	}
	return fmt.Sprintf("OptimizationLevel(%d)", int(l))
}

// ParseOptimizationLevel accepts the names String returns.
func ParseOptimizationLevel(s string) (OptimizationLevel, error) {
	for l, n := range levelNames {
		if strings.EqualFold(n, s) {
			return l, nil
		}
	}
	return 0, fmt.Errorf("ort: unknown optimization level %q (want disable, basic, extended or all)", s)
}

func (l OptimizationLevel) ort() (onnxruntime.GraphOptimizationLevel, error) {
	switch l {
	case OptimizeAll:
		return onnxruntime.GraphOptimizationLevelEnableAll, nil
	case OptimizeDisable:
		return onnxruntime.GraphOptimizationLevelDisableAll, nil
	case OptimizeBasic:
		return onnxruntime.GraphOptimizationLevelEnableBasic, nil
	case OptimizeExtended:
		return onnxruntime.GraphOptimizationLevelEnableExtended, nil
	}
	return 0, fmt.Errorf("ort: unknown %v", l)
}

// WeightBinding chooses how the exposed weights reach ORT.
type WeightBinding int

// The weight bindings. Both let ORT read the session's weight memory in
// place; they differ only in per-Run overhead and in needing the shim.
const (
	// AddInitializer hands each weight to ORT once, before the session is
	// created (OrtApi::AddInitializer). The default.
	AddInitializer WeightBinding = iota
	// FeedEachRun appends every weight to the inputs of every Run.
	FeedEachRun
)

// String returns "add-initializer" or "feed-each-run".
func (b WeightBinding) String() string {
	switch b {
	case AddInitializer:
		return "add-initializer"
	case FeedEachRun:
		return "feed-each-run"
	}
	return fmt.Sprintf("WeightBinding(%d)", int(b))
}

// Options configure a session. The zero value (and a nil *Options) means
// ORT's defaults: its own thread counts, every graph optimization, the CPU
// execution provider and AddInitializer.
type Options struct {
	// IntraOpThreads and InterOpThreads set ORT's thread pools; 0 keeps
	// ORT's default.
	IntraOpThreads, InterOpThreads int
	// OptimizationLevel is the graph optimization level (default all).
	OptimizationLevel OptimizationLevel
	// ExecutionProviders lists providers in priority order. Only "cpu"
	// (also "CPU", "CPUExecutionProvider") is supported: patched weights
	// live in host memory, which only the CPU provider reads in place.
	ExecutionProviders []string
	// Mode chooses live, baked or hybrid switching (Open only; OpenModel
	// sessions have no exposed weights). The zero value is DefaultMode.
	Mode Mode
	// WeightBinding chooses how exposed weights reach the live session
	// (Open with ModeLive or ModeHybrid).
	WeightBinding WeightBinding
	// SessionConfig holds extra session configuration entries
	// (AddSessionConfigEntry), e.g. "session.disable_prepacking": "1".
	SessionConfig map[string]string
	// RunConfig holds run configuration entries (AddRunConfigEntry)
	// applied to every Run.
	RunConfig map[string]string
	// VerifyWeights makes Open check the sha256 of every exposed weight
	// against the manifest (reads all weight pages once).
	VerifyWeights bool
}

// providers maps the accepted provider spellings to the function that
// appends the provider to ORT session options. Add an entry to support
// another provider.
var providers = map[string]func(*onnxruntime.SessionOptions) error{
	"cpu": func(*onnxruntime.SessionOptions) error { return nil }, // ORT's built-in fallback
}

func providerKey(name string) string {
	k := strings.ToLower(strings.TrimSpace(name))
	return strings.TrimSuffix(k, "executionprovider")
}

// validate checks o without touching ORT.
func (o *Options) validate() error {
	if o.IntraOpThreads < 0 || o.InterOpThreads < 0 {
		return fmt.Errorf("ort: negative thread count (intra %d, inter %d)", o.IntraOpThreads, o.InterOpThreads)
	}
	if _, err := o.OptimizationLevel.ort(); err != nil {
		return err
	}
	if !o.Mode.valid() {
		return fmt.Errorf("ort: unknown %v", o.Mode)
	}
	if o.WeightBinding != AddInitializer && o.WeightBinding != FeedEachRun {
		return fmt.Errorf("ort: unknown %v", o.WeightBinding)
	}
	for _, p := range o.ExecutionProviders {
		if _, ok := providers[providerKey(p)]; !ok {
			return fmt.Errorf("ort: execution provider %q is not supported: shira-ort patches weights in host memory, which only the CPU execution provider reads in place, and this build (ONNX Runtime %s from onnxruntime-node, linux CPU) is used with the CPU provider only; use \"cpu\"",
				p, libraryVersionForMessage())
		}
	}
	return nil
}

func libraryVersionForMessage() string {
	if v := Version(); v != "" {
		return v
	}
	return LibraryVersion
}

// disableOptimizersKey is ORT's session configuration key holding a
// semicolon-separated list of graph transformers not to run.
const disableOptimizersKey = "optimization.disable_specified_optimizers"

// sessionOptions builds ORT session options from o, adding disable to the
// disabled graph transformers; the caller destroys them.
func (o *Options) sessionOptions(disable []string) (*onnxruntime.SessionOptions, error) {
	so, err := onnxruntime.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("ort: session options: %w", err)
	}
	fail := func(what string, err error) (*onnxruntime.SessionOptions, error) {
		so.Destroy()
		return nil, fmt.Errorf("ort: %s: %w", what, err)
	}
	if o.IntraOpThreads > 0 {
		if err := so.SetIntraOpNumThreads(o.IntraOpThreads); err != nil {
			return fail("intra-op threads", err)
		}
	}
	if o.InterOpThreads > 0 {
		if err := so.SetInterOpNumThreads(o.InterOpThreads); err != nil {
			return fail("inter-op threads", err)
		}
	}
	level, _ := o.OptimizationLevel.ort()
	if err := so.SetGraphOptimizationLevel(level); err != nil {
		return fail("optimization level", err)
	}
	for _, p := range o.ExecutionProviders {
		if err := providers[providerKey(p)](so); err != nil {
			return fail("execution provider "+p, err)
		}
	}
	cfg := map[string]string{}
	for k, v := range o.SessionConfig {
		cfg[k] = v
	}
	if len(disable) > 0 {
		list := disable
		if v := cfg[disableOptimizersKey]; v != "" {
			list = append(strings.Split(v, ";"), disable...)
		}
		cfg[disableOptimizersKey] = strings.Join(list, ";")
	}
	for k, v := range cfg {
		if err := so.AddSessionConfigEntry(k, v); err != nil {
			return fail("session config "+k, err)
		}
	}
	return so, nil
}
