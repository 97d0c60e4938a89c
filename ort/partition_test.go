package ort

import (
	"context"
	"strings"
	"testing"
)

func TestProfilePartition(t *testing.T) {
	requireORT(t)
	parts, err := ProfilePartition(context.Background(), testdata("mlp"), &Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 2 || parts[0].Mode != ModeLive || parts[1].Mode != ModeBaked {
		t.Fatalf("got %d partitions", len(parts))
	}
	for _, p := range parts {
		t.Log("\n" + p.Summary())
		if len(p.Nodes) == 0 || p.Count["CPUExecutionProvider"] != len(p.Nodes) {
			t.Errorf("%v: nodes %v", p.Mode, p.Nodes)
		}
		if len(p.Weights) != 2 {
			t.Fatalf("%v: weights %v", p.Mode, p.Weights)
		}
	}
	// Live: the MatMuls reading the exposed weights run under their own
	// names on the CPU provider.
	for _, w := range parts[0].Weights {
		for _, c := range w.Consumers {
			if c.Provider != "CPUExecutionProvider" {
				t.Errorf("live: %s consumer %s on %q", w.Weight, c.Node, c.Provider)
			}
		}
	}
	plain, err := ProfilePartition(context.Background(), testdata("mlp_plain.onnx"), nil)
	if err != nil || len(plain) != 1 || !strings.Contains(plain[0].Summary(), "CPUExecutionProvider") {
		t.Fatalf("plain model: %v %v", plain, err)
	}
}

// TestProviderReportWording: a provider that fell back (which only happens
// with Options.ProviderFallback) is reported without the advice to set it, and a weight consumer ORT did not run under its name reads as a
// sentence, not as "on not run under this name".
func TestProviderReportWording(t *testing.T) {
	pe := &ProviderUnavailableError{
		Provider: "nnapi", ORTName: "NnapiExecutionProvider", Version: "1.24.1",
		Available: []string{"CPUExecutionProvider"}, Reason: "NnapiExecutionProvider is not compiled into this build"}
	if got := pe.Error(); !strings.Contains(got, "ProviderFallback") {
		t.Errorf("the error of a session that did not fall back should say how to fall back: %s", got)
	}
	pe.fellBack = true
	fell := ProviderStatus{Provider: Provider{Name: "nnapi"}, Err: pe}
	out := (&Partition{Mode: ModeLive, Providers: []ProviderStatus{fell},
		Nodes: []NodePlacement{{Node: "/fc2/MatMul", OpType: "MatMul", Provider: "CPUExecutionProvider"}},
		Count: map[string]int{"CPUExecutionProvider": 1},
		Weights: []WeightPlacement{
			{Weight: "fc1.weight", Consumers: []NodePlacement{{Node: "/fc1/Gemm", OpType: "Gemm"}}},
			{Weight: "fc2.weight", Consumers: []NodePlacement{{Node: "/fc2/MatMul", OpType: "MatMul", Provider: "CPUExecutionProvider"}}},
		}}).Summary()
	for _, want := range []string{
		"live session:\n",
		"provider nnapi: fell back to CPU: NnapiExecutionProvider is not compiled into this build; ONNX Runtime 1.24.1 has CPUExecutionProvider\n",
		`weight fc1.weight: read by "/fc1/Gemm" (Gemm), which ORT did not run under that name`,
		`weight fc2.weight: read by "/fc2/MatMul" (MatMul) on CPUExecutionProvider`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("partition report lacks %q:\n%s", want, out)
		}
	}
	for _, bad := range []string{"fallback", "Fallback", "on not run"} {
		if strings.Contains(out, bad) {
			t.Errorf("partition report says %q:\n%s", bad, out)
		}
	}
}
