package ort

import (
	"fmt"
	"strings"
	"time"

	"github.com/shira-ort/shira-ort/internal/ortshim"
	"github.com/shira-ort/shira-ort/patch"
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

func (l OptimizationLevel) ort() (ortshim.OptimizationLevel, error) {
	switch l {
	case OptimizeAll:
		return ortshim.OptimizeAll, nil
	case OptimizeDisable:
		return ortshim.OptimizeDisableAll, nil
	case OptimizeBasic:
		return ortshim.OptimizeBasic, nil
	case OptimizeExtended:
		return ortshim.OptimizeExtended, nil
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
	// Providers lists execution providers, with their options, in
	// priority order: "cpu", "xnnpack", "qnn", "nnapi", "coreml" (any case;
	// ORT's names such as "QNNExecutionProvider" are accepted too). ORT
	// assigns each node to the first provider that takes it; CPU always
	// comes last and takes the rest. See Provider and ParseProvider, and
	// docs/providers.md for what patching means per provider.
	Providers []Provider
	// ProviderFallback makes a provider that the loaded ORT build lacks,
	// or that fails at session creation, fall back to CPU instead of
	// failing Open; Session.Providers reports what happened. Without it,
	// such a provider fails Open with a *ProviderUnavailableError (or the
	// session-creation error).
	ProviderFallback bool
	// Mode chooses packed, live, baked or hybrid switching (Open only; OpenModel
	// sessions have no exposed weights). The zero value is DefaultMode.
	Mode Mode
	// WeightBinding chooses how exposed weights reach the live session
	// (Open with ModeLive or ModeHybrid).
	WeightBinding WeightBinding
	// RebuildDelay (ModeHybrid) bounds how long the background rebuild
	// after a switch waits for the first Run to return adapted outputs
	// from the live session; that Run starts it at once. Waiting keeps
	// the rebuild from competing with the first Run after a switch for
	// the cores. 0 means DefaultRebuildDelay; negative starts the rebuild
	// together with the switch.
	RebuildDelay time.Duration
	// KeepLiveWeights (ModeHybrid) keeps the live session's patched
	// weight pages after the background rebuild instead of reverting and
	// releasing them: the next switch then costs what a live switch costs
	// (no page is copied again), at the price of holding the exposed
	// weights twice in the steady state (once in the mapping, once
	// prepacked inside ORT). Off by default.
	KeepLiveWeights bool
	// PackedTranslationCache (ModePacked) bounds the bytes of translated
	// adapter tensors (packed offsets and values permuted alike: the size
	// of the adapter's indices and values) a packed session keeps, least
	// recently used first out, so that an adapter's indices are translated
	// into the packed layout and ordered once per adapter and session, not
	// at every switch to it (the translation is about half of a packed
	// switch). A cached adapter is retained (adapter.Adapter.Retain) until
	// its translation leaves the cache or the session closes, so its
	// mapping stays even after the caller closes it. 0 means
	// DefaultPackedTranslationCache; a negative value keeps nothing (each
	// switch translates afresh, and the steady memory is the weights plus
	// the active adapters' indices).
	PackedTranslationCache int64
	// SessionConfig holds extra session configuration entries
	// (AddSessionConfigEntry), e.g. "session.disable_prepacking": "1".
	SessionConfig map[string]string
	// RunConfig holds run configuration entries (AddRunConfigEntry)
	// applied to every Run.
	RunConfig map[string]string
	// profilePrefix enables ORT profiling into files with this prefix
	// (ProfilePartition).
	profilePrefix string
	// VerifyWeights makes Open check the sha256 of every exposed weight
	// against the manifest (reads all weight pages once).
	VerifyWeights bool
	// KeepMallocSettings stops Open of a baked or hybrid session from
	// fixing glibc's mmap threshold (a process-wide setting, changed once
	// per process; see docs/session-modes.md): without the fix, a released
	// session's prepacked weights may stay in the heap, so RSS after a
	// switch can grow by up to the weights' size.
	KeepMallocSettings bool
	// CheckFinite makes Set and Apply refuse a configuration that would
	// turn a finite weight entry into NaN or an infinity (NaN values, a
	// huge alpha, a sum beyond float16's range), before writing anything:
	// patch.WithFiniteCheck, one more pass over the configuration's
	// entries per switch. The CLI turns it on.
	CheckFinite bool
	// Rounding is how the new codes of quantized weights are rounded
	// (patch.WithRounding): patch.RoundNearestEven (the zero value, ONNX
	// QuantizeLinear's) or patch.RoundStochastic. Offline fusion that
	// should match the session bit for bit needs the same rounding.
	Rounding patch.Rounding
	// SkipFingerprintCheck lets Set apply adapters made for another base
	// (model or per-weight fingerprint mismatch) as long as names, dtypes
	// and shapes fit: the CLI's --force.
	SkipFingerprintCheck bool
}

// DefaultRebuildDelay is the longest a hybrid session's background
// rebuild waits for the first Run after a switch (Options.RebuildDelay).
const DefaultRebuildDelay = 500 * time.Millisecond

// rebuildDelay resolves Options.RebuildDelay.
func (o *Options) rebuildDelay() time.Duration {
	switch {
	case o.RebuildDelay == 0:
		return DefaultRebuildDelay
	case o.RebuildDelay < 0:
		return 0
	}
	return o.RebuildDelay
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
	if _, err := o.providerList(); err != nil {
		return err
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
// disabled graph transformers and appending the execution providers (none
// but CPU when cpuOnly); the caller destroys them. The statuses say which
// providers were appended and why the others fell back.
func (o *Options) sessionOptions(disable []string, cpuOnly bool) (*ortshim.SessionOptions, []ProviderStatus, error) {
	so, err := ortshim.NewSessionOptions()
	if err != nil {
		return nil, nil, fmt.Errorf("ort: session options: %w", err)
	}
	fail := func(what string, err error) (*ortshim.SessionOptions, []ProviderStatus, error) {
		so.Release()
		return nil, nil, fmt.Errorf("ort: %s: %w", what, err)
	}
	if o.IntraOpThreads > 0 {
		if err := so.SetIntraOpThreads(o.IntraOpThreads); err != nil {
			return fail("intra-op threads", err)
		}
	}
	if o.InterOpThreads > 0 {
		if err := so.SetInterOpThreads(o.InterOpThreads); err != nil {
			return fail("inter-op threads", err)
		}
	}
	level, _ := o.OptimizationLevel.ort()
	if err := so.SetOptimizationLevel(level); err != nil {
		return fail("optimization level", err)
	}
	if o.profilePrefix != "" {
		if err := so.EnableProfiling(o.profilePrefix); err != nil {
			return fail("profiling", err)
		}
	}
	statuses, err := o.appendProviders(so, cpuOnly)
	if err != nil {
		so.Release()
		return nil, nil, err
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
		if err := so.AddConfigEntry(k, v); err != nil {
			return fail("session config "+k, err)
		}
	}
	return so, statuses, nil
}
