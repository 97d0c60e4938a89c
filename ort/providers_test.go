package ort

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/internal/ortshim"
)

func TestParseProvider(t *testing.T) {
	good := map[string]string{
		"cpu":                            "cpu",
		"XNNPACK":                        "xnnpack",
		"QNNExecutionProvider":           "qnn",
		"nnapi:fp16=1,cpu_disabled=true": "nnapi:cpu_disabled=true,fp16=1",
		"qnn:backend_path=libQnnHtp.so,htp_performance_mode=burst": "qnn:backend_path=libQnnHtp.so,htp_performance_mode=burst",
		"coreml:MLComputeUnits=CPUAndNeuralEngine":                 "coreml:MLComputeUnits=CPUAndNeuralEngine",
		"xnnpack:intra_op_num_threads=2":                           "xnnpack:intra_op_num_threads=2",
	}
	for in, want := range good {
		p, err := ParseProvider(in)
		if err != nil {
			t.Errorf("ParseProvider(%q): %v", in, err)
			continue
		}
		d, _ := lookupProvider(p.Name)
		p.Name = d.name
		if p.String() != want {
			t.Errorf("ParseProvider(%q) = %s, want %s", in, p, want)
		}
	}
	for _, in := range []string{"cuda", "cpu:threads=2", "nnapi:fp32=1", "nnapi:fp16=maybe", "nnapi:cpu_only=1,cpu_disabled=1",
		"qnn:htp_performance_mode=turbo", "qnn:backend_path=a.so,backend_type=htp", "xnnpack:threads", "xnnpack:foo=1"} {
		if _, err := ParseProvider(in); err == nil {
			t.Errorf("ParseProvider(%q) accepted", in)
		}
	}
	if _, err := OpenModel(context.Background(), testdata("mlp_plain.onnx"), &Options{Providers: providers("cpu", "xnnpack")}); err == nil || !strings.Contains(err.Error(), "must come last") {
		t.Errorf("cpu before xnnpack: %v", err)
	}
}

// absentProviders returns the accelerator providers the loaded library
// lacks (on this machine's CPU-only linux build: all of them).
func absentProviders(t *testing.T) []string {
	avail, err := AvailableProviders()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ONNX Runtime %s providers: %v", Version(), avail)
	var out []string
	for _, d := range providerDefs {
		switch {
		case d.name == ProviderCPU:
		case d.name == ProviderNNAPI && ortshim.HasSymbol(ortshim.NnapiSymbol):
		case d.name != ProviderNNAPI && slices.Contains(avail, d.ortName):
		default:
			out = append(out, d.name)
		}
	}
	return out
}

func TestProviderCPU(t *testing.T) {
	requireORT(t)
	for _, m := range []Mode{ModeLive, ModeBaked, ModeHybrid} {
		s := mustOpen(t, testdata("mlp"), &Options{Mode: m, Providers: []Provider{{Name: "cpu"}}})
		st := s.Providers()
		if len(st) != 1 || !st[0].Active || st[0].ORTName != "CPUExecutionProvider" {
			t.Fatalf("%v: Providers() = %v", m, st)
		}
		mustRun(t, s, mlpInput(t, 2, 1))
	}
}

func TestAbsentProviderErrors(t *testing.T) {
	requireORT(t)
	for _, name := range absentProviders(t) {
		_, err := Open(context.Background(), testdata("mlp"), &Options{Mode: ModeLive, Providers: providers(name)})
		if err == nil {
			t.Errorf("%s: Open succeeded on a build without it", name)
			continue
		}
		var pe *ProviderUnavailableError
		if !errors.Is(err, ErrProviderUnavailable) || !errors.As(err, &pe) || pe.Provider != name {
			t.Errorf("%s: error %v is not a ProviderUnavailableError for it", name, err)
			continue
		}
		for _, want := range []string{name, Version(), "CPUExecutionProvider", "ProviderFallback"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not mention %q", name, err, want)
			}
		}
		t.Logf("%s: %v", name, err)
	}
}

func TestProviderFallback(t *testing.T) {
	requireORT(t)
	absent := absentProviders(t)
	if len(absent) == 0 {
		t.Skip("every provider is available in this build")
	}
	in := mlpInput(t, 3, 2)
	want := mustRun(t, mustOpen(t, testdata("mlp"), &Options{Mode: ModeLive}), in)["Y"].Data
	var provs []Provider
	for _, n := range absent {
		provs = append(provs, Provider{Name: n})
	}
	provs = append(provs, Provider{Name: "cpu"})
	for _, m := range []Mode{ModeLive, ModeBaked, ModeHybrid} {
		s := mustOpen(t, testdata("mlp"), &Options{Mode: m, Providers: provs, ProviderFallback: true})
		st := s.Providers()
		if len(st) != len(provs) {
			t.Fatalf("%v: %d statuses for %d providers", m, len(st), len(provs))
		}
		for i, p := range st[:len(st)-1] {
			if p.Active || !errors.Is(p.Err, ErrProviderUnavailable) || p.Provider.Name != absent[i] {
				t.Errorf("%v: status %v", m, p)
			}
		}
		if !st[len(st)-1].Active {
			t.Errorf("%v: cpu not active: %v", m, st[len(st)-1])
		}
		if got := mustRun(t, s, in)["Y"].Data; !bytes.Equal(got, want) {
			t.Errorf("%v: fallback session output differs from the CPU session", m)
		}
	}
}
