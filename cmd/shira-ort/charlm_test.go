package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/internal/demo/charlm"
	"github.com/shira-ort/shira-ort/internal/orttest"
)

// TestCharDemo runs the charlm demo (short samples). The demo checks itself:
// it returns an error unless the revert after the SHiRA switches gives the
// base sample and logits again, and the revert after the LoRA fusions the
// base logits, bit for bit; so a nil error is the real assertion. The output checks below only
// make sure both halves ran: a SHiRA sample, a LoRA sample, the revert line
// and the switch-time table with a time in both columns for every style.
func TestCharDemo(t *testing.T) {
	orttest.Require(t)
	var out bytes.Buffer
	if err := runCharDemo(t.Context(), &out, t.TempDir(), charDemoOptions{Length: 24, Seed: 7}); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	s := out.String()
	for _, want := range []string{"(SHiRA switch ", "(LoRA switch ", "logits equal bit for bit", "every revert restored the base logits bit for bit"} {
		if !strings.Contains(s, want) {
			t.Fatalf("demo output lacks %q:\n%s", want, s)
		}
	}
	_, table, _ := strings.Cut(s, "LoRA fusion\n")
	for _, row := range append(charlm.Styles(), "base (revert)") {
		if row != "base (revert)" {
			row = "+ " + row
		}
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(row) + ` +[0-9.]+ [µm]s +[0-9.]+ [µm]s$`).MatchString(table) {
			t.Errorf("the switch-time table has no SHiRA and LoRA time for %q:\n%s", row, table)
		}
	}
}

// TestGenerateCmd generates from the shipped model with and without an
// adapter: same seed, different text; same seed twice, same text.
func TestGenerateCmd(t *testing.T) {
	orttest.Require(t)
	gen := func(args ...string) string {
		t.Helper()
		return mustCLI(t, append([]string{"generate", "-n", "30", "--seed", "5", "--prompt", "The "}, args...)...)
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
