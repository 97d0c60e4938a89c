package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/internal/orttest"
)

// TestCharDemo runs the charlm demo (short samples): every switch, the LoRA
// comparison and the bit-exact revert checks.
func TestCharDemo(t *testing.T) {
	orttest.Require(t)
	var out bytes.Buffer
	if err := runCharDemo(t.Context(), &out, t.TempDir(), charDemoOptions{Length: 24, Seed: 7}); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	s := out.String()
	for _, want := range []string{"SHiRA switch", "LoRA switch", "logits equal bit for bit", "LoRA fusion"} {
		if !strings.Contains(s, want) {
			t.Fatalf("demo output lacks %q:\n%s", want, s)
		}
	}
}

// TestGenerateCmd generates from the shipped model with and without an
// adapter: same seed, different text; same seed twice, same text.
func TestGenerateCmd(t *testing.T) {
	orttest.Require(t)
	gen := func(args ...string) string {
		t.Helper()
		cmd := newGenerateCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(append([]string{"-n", "30", "--seed", "5", "--prompt", "The "}, args...))
		if err := cmd.Execute(); err != nil {
			t.Fatalf("generate %v: %v\n%s", args, err, out.String())
		}
		return out.String()
	}
	base := gen()
	if !strings.HasPrefix(base, "The ") || len(base) < 30 {
		t.Fatalf("generate output %q", base)
	}
	if again := gen(); again != base {
		t.Fatalf("same seed, different text: %q vs %q", base, again)
	}
	if legal := gen("--adapter", "legal"); legal == base {
		t.Fatalf("the legal adapter did not change the text %q", base)
	}
	if fused := gen("--adapter", "legal:0.5", "--adapter", "bofh:0.5"); fused == base {
		t.Fatalf("the fused adapters did not change the text %q", base)
	}
}
