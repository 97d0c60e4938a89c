package ort

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/shira-ort/shira-ort/internal/ortshim"
)

// The execution provider names Options accepts (see docs/providers.md).
const (
	ProviderCPU     = "cpu"     // ORT's CPU provider: always present, always last
	ProviderXNNPACK = "xnnpack" // XNNPACK (arm64/x64 CPU kernels; Android, iOS, some Linux builds)
	ProviderQNN     = "qnn"     // Qualcomm AI Engine Direct (Snapdragon HTP/NPU, GPU, CPU backends)
	ProviderNNAPI   = "nnapi"   // Android Neural Networks API (Android builds only)
	ProviderCoreML  = "coreml"  // Apple Core ML (macOS/iOS builds only)
)

// Provider is an execution provider with its ORT provider options.
//
// Options by provider (values are strings, as ORT takes them):
//   - cpu: none.
//   - xnnpack: "intra_op_num_threads" (XNNPACK's own thread pool size).
//   - qnn: ORT's QNN provider options, passed through, e.g.
//     "backend_path" ("libQnnHtp.so" for the NPU) or "backend_type",
//     "htp_performance_mode"; ONNX Runtime's QNN execution provider
//     documentation lists them all.
//   - nnapi: flags as booleans ("1"/"true"/"0"/"false"): "fp16"
//     (NNAPI_FLAG_USE_FP16: fp16 relaxation), "nchw" (NNAPI_FLAG_USE_NCHW),
//     "cpu_disabled" (NNAPI_FLAG_CPU_DISABLED: no nnapi-reference CPU
//     device), "cpu_only" (NNAPI_FLAG_CPU_ONLY).
//   - coreml: ORT's CoreML options, passed through, e.g. "ModelFormat",
//     "MLComputeUnits" (see ONNX Runtime's CoreML execution provider
//     documentation).
type Provider struct {
	Name    string
	Options map[string]string
}

// String renders p in the form ParseProvider reads.
func (p Provider) String() string {
	if len(p.Options) == 0 {
		return p.Name
	}
	keys := make([]string, 0, len(p.Options))
	for k := range p.Options {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + p.Options[k]
	}
	return p.Name + ":" + strings.Join(keys, ",")
}

// ParseProvider reads "NAME" or "NAME:KEY=VALUE,KEY=VALUE" (the CLI's
// --provider syntax), e.g. "qnn:backend_path=libQnnHtp.so,htp_performance_mode=burst"
// or "nnapi:fp16=1,cpu_disabled=1". The name and options are checked as
// Options checks them.
func ParseProvider(spec string) (Provider, error) {
	name, opts, _ := strings.Cut(strings.TrimSpace(spec), ":")
	p := Provider{Name: name}
	if opts != "" {
		p.Options = map[string]string{}
		for _, kv := range strings.Split(opts, ",") {
			k, v, ok := strings.Cut(kv, "=")
			k = strings.TrimSpace(k)
			if !ok || k == "" {
				return Provider{}, fmt.Errorf("ort: provider %q: option %q is not KEY=VALUE", spec, kv)
			}
			p.Options[k] = strings.TrimSpace(v)
		}
	}
	if _, err := p.resolve(); err != nil {
		return Provider{}, err
	}
	return p, nil
}

// ProviderStatus reports what became of one requested execution provider
// in a session.
type ProviderStatus struct {
	// Provider is the requested provider (canonical name).
	Provider Provider
	// ORTName is ORT's name for it, e.g. "QNNExecutionProvider".
	ORTName string
	// Active is true when the provider was appended to the ORT session.
	Active bool
	// Err says why it is not active (it fell back to CPU).
	Err error
}

// String is e.g. "xnnpack: active" or "qnn: fell back to CPU: ...".
func (st ProviderStatus) String() string {
	if st.Active {
		return st.Provider.String() + ": active"
	}
	return fmt.Sprintf("%s: fell back to CPU: %v", st.Provider, st.Err)
}

// ErrProviderUnavailable is matched (errors.Is) by every
// *ProviderUnavailableError.
var ErrProviderUnavailable = errors.New("execution provider not available")

// ProviderUnavailableError is returned when the loaded ONNX Runtime build
// lacks a requested execution provider (and Options.ProviderFallback is
// off).
type ProviderUnavailableError struct {
	Provider  string   // canonical name, e.g. "nnapi"
	ORTName   string   // e.g. "NnapiExecutionProvider"
	Version   string   // ORT version of the loaded library
	Library   string   // path of the loaded library ("" if unknown)
	Available []string // the providers compiled into the library
	Reason    string   // what was checked
	Err       error    // ORT's error, if ORT was asked

	fellBack bool // recorded in a ProviderStatus: the session fell back to CPU
}

// Error names the provider, the build and what it has. When the session
// fell back to CPU instead (the error is a ProviderStatus's), it says only
// why the provider is missing.
func (e *ProviderUnavailableError) Error() string {
	if e.fellBack {
		why := fmt.Sprintf("%s; ONNX Runtime %s has %s", e.Reason, e.Version, strings.Join(e.Available, ", "))
		if e.Err != nil {
			why += ": " + e.Err.Error()
		}
		return why
	}
	lib := e.Library
	if lib == "" {
		lib = "(library loaded by the application)"
	}
	msg := fmt.Sprintf("ort: execution provider %s (%s) is not available in ONNX Runtime %s at %s (this build has: %s): %s",
		e.Provider, e.ORTName, e.Version, lib, strings.Join(e.Available, ", "), e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg + "; use an ONNX Runtime build that has it (see docs/providers.md), or let the session fall back to CPU (Options.ProviderFallback)"
}

// Unwrap returns ORT's error.
func (e *ProviderUnavailableError) Unwrap() error { return e.Err }

// Is matches ErrProviderUnavailable.
func (e *ProviderUnavailableError) Is(target error) bool { return target == ErrProviderUnavailable }

// providerDef describes how one provider is appended.
type providerDef struct {
	name    string // canonical
	ortName string // ORT's provider type, as GetAvailableProviders lists it
	// check validates options without ORT.
	check func(opts map[string]string) error
	// add appends the provider; unavailable means the build lacks it
	// (reason set), as opposed to ORT rejecting the options (err).
	add func(so *ortshim.SessionOptions, opts map[string]string) (reason string, err error)
}

var providerDefs = []providerDef{
	{name: ProviderCPU, ortName: "CPUExecutionProvider",
		check: func(opts map[string]string) error {
			if len(opts) > 0 {
				return errors.New("the CPU provider takes no options (use IntraOpThreads etc.)")
			}
			return nil
		},
		add: func(*ortshim.SessionOptions, map[string]string) (string, error) { return "", nil }},
	{name: ProviderXNNPACK, ortName: "XnnpackExecutionProvider",
		check: knownKeys("intra_op_num_threads"),
		add:   genericAppend("XNNPACK", "XnnpackExecutionProvider")},
	{name: ProviderQNN, ortName: "QNNExecutionProvider",
		check: checkQNN,
		add:   genericAppend("QNN", "QNNExecutionProvider")},
	{name: ProviderNNAPI, ortName: "NnapiExecutionProvider",
		check: func(opts map[string]string) error { _, err := nnapiFlags(opts); return err },
		add:   appendNNAPI},
	{name: ProviderCoreML, ortName: "CoreMLExecutionProvider",
		check: func(map[string]string) error { return nil },
		add: func(so *ortshim.SessionOptions, opts map[string]string) (string, error) {
			if r := notCompiledIn("CoreMLExecutionProvider"); r != "" {
				return r, nil
			}
			return "", so.AppendCoreML(opts)
		}},
}

// SupportedProviders returns the canonical names Options accepts, in the
// order of this package's documentation.
func SupportedProviders() []string {
	out := make([]string, len(providerDefs))
	for i, d := range providerDefs {
		out[i] = d.name
	}
	return out
}

// AvailableProviders returns the execution providers compiled into the
// loaded ONNX Runtime library (ORT's names, e.g. "CPUExecutionProvider"),
// loading it first.
func AvailableProviders() ([]string, error) {
	if err := Init(); err != nil {
		return nil, err
	}
	l, err := ortshim.AvailableProviders()
	if err != nil {
		return nil, fmt.Errorf("ort: %w", err)
	}
	return l, nil
}

// lookupProvider finds the definition of a provider name in any accepted
// spelling: "qnn", "QNN", "QNNExecutionProvider".
func lookupProvider(name string) (*providerDef, bool) {
	k := strings.ToLower(strings.TrimSpace(name))
	k = strings.TrimSuffix(k, "executionprovider")
	for i := range providerDefs {
		if providerDefs[i].name == k {
			return &providerDefs[i], true
		}
	}
	return nil, false
}

// resolve checks p and returns its definition.
func (p Provider) resolve() (*providerDef, error) {
	d, ok := lookupProvider(p.Name)
	if !ok {
		return nil, fmt.Errorf("ort: execution provider %q is not supported by shira-ort (supported: %s; CPU is always the last resort)",
			p.Name, strings.Join(SupportedProviders(), ", "))
	}
	if err := d.check(p.Options); err != nil {
		return nil, fmt.Errorf("ort: execution provider %s: %w", d.name, err)
	}
	return d, nil
}

// providerList returns the requested providers in priority order with
// canonical names, checked.
func (o *Options) providerList() ([]Provider, error) {
	all := o.Providers
	out := make([]Provider, 0, len(all))
	seen := map[string]bool{}
	for _, p := range all {
		if _, err := p.resolve(); err != nil {
			return nil, err
		}
	}
	for i, p := range all {
		d, _ := p.resolve()
		if seen[d.name] {
			return nil, fmt.Errorf("ort: execution provider %s requested twice", d.name)
		}
		seen[d.name] = true
		if d.name == ProviderCPU && i != len(all)-1 {
			return nil, fmt.Errorf("ort: execution provider cpu must come last: ORT tries the CPU provider after every other one")
		}
		out = append(out, Provider{Name: d.name, Options: p.Options})
	}
	return out, nil
}

// appendProviders appends the requested providers to so in order. A
// provider the build lacks is an error, or with ProviderFallback a
// status with Active false; options ORT rejects are always an error. cpuOnly records every non-CPU provider as
// fallen back without trying it.
func (o *Options) appendProviders(so *ortshim.SessionOptions, cpuOnly bool) ([]ProviderStatus, error) {
	list, err := o.providerList()
	if err != nil {
		return nil, err
	}
	var out []ProviderStatus
	for _, p := range list {
		d, _ := lookupProvider(p.Name)
		st := ProviderStatus{Provider: p, ORTName: d.ortName}
		if cpuOnly && d.name != ProviderCPU {
			st.Err = errors.New("not appended (CPU-only retry)")
			out = append(out, st)
			continue
		}
		reason, err := d.add(so, p.Options)
		if reason == "" && err == nil {
			st.Active = true
			out = append(out, st)
			continue
		}
		if reason == "" { // the build has it but refused the options: always an error
			return nil, fmt.Errorf("ort: execution provider %s (%s) rejected options %v: %w", d.name, d.ortName, p.Options, err)
		}
		uerr := unavailable(d, reason, err)
		if !o.ProviderFallback {
			return nil, uerr
		}
		uerr.fellBack = true
		st.Err = uerr
		out = append(out, st)
	}
	return out, nil
}

func unavailable(d *providerDef, reason string, err error) *ProviderUnavailableError {
	avail, _ := ortshim.AvailableProviders()
	return &ProviderUnavailableError{Provider: d.name, ORTName: d.ortName, Version: libraryVersionForMessage(),
		Library: loadedPath, Available: avail, Reason: reason, Err: err}
}

// notCompiledIn returns a reason when ortName is not among the library's
// available providers, "" when it is (or the list cannot be read).
func notCompiledIn(ortName string) string {
	avail, err := ortshim.AvailableProviders()
	if err != nil || slices.Contains(avail, ortName) {
		return ""
	}
	return ortName + " is not compiled into this build (OrtApi::GetAvailableProviders)"
}

// genericAppend appends through OrtApi::SessionOptionsAppendExecutionProvider
// under ORT's registration name.
func genericAppend(regName, ortName string) func(*ortshim.SessionOptions, map[string]string) (string, error) {
	return func(so *ortshim.SessionOptions, opts map[string]string) (string, error) {
		if r := notCompiledIn(ortName); r != "" {
			return r, nil
		}
		if err := so.AppendExecutionProvider(regName, opts); err != nil {
			if strings.Contains(err.Error(), "not supported in this build") || strings.Contains(err.Error(), "Unknown provider name") {
				return "ORT refused to append " + regName, err
			}
			return "", err
		}
		return "", nil
	}
}

// NNAPI flags (nnapi_provider_factory.h).
const (
	nnapiUseFP16     = 0x001
	nnapiUseNCHW     = 0x002
	nnapiCPUDisabled = 0x004
	nnapiCPUOnly     = 0x008
)

var nnapiFlagBits = map[string]uint32{"fp16": nnapiUseFP16, "nchw": nnapiUseNCHW, "cpu_disabled": nnapiCPUDisabled, "cpu_only": nnapiCPUOnly}

// nnapiFlags turns the nnapi options into NNAPI_FLAG_* bits.
func nnapiFlags(opts map[string]string) (uint32, error) {
	var flags uint32
	for k, v := range opts {
		bit, ok := nnapiFlagBits[strings.ToLower(k)]
		if !ok {
			return 0, fmt.Errorf("unknown NNAPI option %q (known: fp16, nchw, cpu_disabled, cpu_only)", k)
		}
		on, err := strconv.ParseBool(v)
		if err != nil {
			return 0, fmt.Errorf("NNAPI option %s=%q is not a boolean", k, v)
		}
		if on {
			flags |= bit
		}
	}
	if flags&nnapiCPUDisabled != 0 && flags&nnapiCPUOnly != 0 {
		return 0, errors.New("NNAPI options cpu_disabled and cpu_only exclude each other")
	}
	return flags, nil
}

// appendNNAPI calls the library's OrtSessionOptionsAppendExecutionProvider_Nnapi,
// looked up with dlsym: the generic append API does not know NNAPI.
func appendNNAPI(so *ortshim.SessionOptions, opts map[string]string) (string, error) {
	flags, err := nnapiFlags(opts)
	if err != nil {
		return "", err
	}
	found, err := so.AppendNnapi(flags)
	if !found {
		return "the library does not export " + ortshim.NnapiSymbol + " (only Android builds of ONNX Runtime have NNAPI)", nil
	}
	if err != nil && strings.Contains(err.Error(), "not enabled in this build") {
		return ortshim.NnapiSymbol + " is a stub in this build", err
	}
	return "", err
}

func knownKeys(keys ...string) func(map[string]string) error {
	return func(opts map[string]string) error {
		for k := range opts {
			if !slices.Contains(keys, k) {
				return fmt.Errorf("unknown option %q (known: %s)", k, strings.Join(keys, ", "))
			}
		}
		return nil
	}
}

var qnnPerfModes = []string{"burst", "balanced", "default", "high_performance", "high_power_saver", "low_balanced",
	"extreme_power_saver", "low_power_saver", "power_saver", "sustained_high_performance"}

func checkQNN(opts map[string]string) error {
	if opts["backend_path"] != "" && opts["backend_type"] != "" {
		return errors.New("QNN options backend_path and backend_type exclude each other")
	}
	if m, ok := opts["htp_performance_mode"]; ok && !slices.Contains(qnnPerfModes, m) {
		return fmt.Errorf("QNN htp_performance_mode %q is not one of %s", m, strings.Join(qnnPerfModes, ", "))
	}
	return nil
}
