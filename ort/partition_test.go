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
