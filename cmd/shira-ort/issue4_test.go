package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/shira-ort/shira-ort/adapter"
	peftfix "github.com/shira-ort/shira-ort/internal/pefttest"
	"github.com/shira-ort/shira-ort/patch"
)

// cli runs the given command constructors' commands with args.
func cli(t *testing.T, args ...string) string {
	t.Helper()
	root := &cobra.Command{Use: "shira-ort", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(newExportCmd(), newCreateCmd(), newConvertCmd(), newFuseLoraCmd(), newExtractCmd(),
		newOverlapCmd(), newExportOrtAdapterCmd())
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		t.Fatalf("shira-ort %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

func TestCLIIssue4(t *testing.T) {
	peftfix.RequireORT(t)
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "base")
	cli(t, "export", peftfix.Path("base.onnx"), "-o", dir)
	p := func(n string) string { return filepath.Join(tmp, n) }

	// PEFT SHiRA -> .shira, patched session equals torch merged.
	t.Log(cli(t, "convert", "--peft", peftfix.Path("shira_a"), "--model", dir, "-o", p("a.shira")))
	cli(t, "convert", "--peft", peftfix.Path("shira_b"), "--model", dir, "-o", p("b.shira"))
	a, err := adapter.Open(p("a.shira"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if d := peftfix.MaxRelDiff(peftfix.RunExported(t, dir, patch.Default(a)), peftfix.Reference(t, "shira_a", "merged_out.npy")); d > 1e-5 {
		t.Fatalf("converted adapter: %g from torch", d)
	}

	// LoRA fuse and LoRA -> SHiRA.
	t.Log(cli(t, "fuse-lora", "--lora", peftfix.Path("lora"), "--model", dir, "-o", p("lora.onnx")))
	if d := peftfix.MaxRelDiff(peftfix.RunModel(t, p("lora.onnx")), peftfix.Reference(t, "lora", "merged_out.npy")); d > 1e-5 {
		t.Fatalf("fuse-lora: %g from torch", d)
	}
	out := cli(t, "convert", "--lora", peftfix.Path("lora"), "--density", "0.1", "--model", dir, "-o", p("l.shira"))
	if !strings.Contains(out, "rel_error") {
		t.Fatalf("no error report:\n%s", out)
	}

	// extract from the fine-tuned ONNX file.
	out = cli(t, "extract", "--base", dir, "--tuned", peftfix.Path("tuned_a.onnx"), "--density", "0.2", "-o", p("x.shira"))
	if !strings.Contains(out, "energy kept 1.0000") {
		t.Fatalf("extract:\n%s", out)
	}

	// the three masks, by density and by r.
	for _, m := range []string{"rand", "wm", "struct"} {
		cli(t, "create", "--model", dir, "--mask", m, "--density", "0.1", "-o", p(m+".shira"))
		t.Log(cli(t, "create", "--model", dir, "--mask", m, "--r", "1", "-o", p(m+"-r.shira")))
	}

	// overlap of the two PEFT adapters and of two struct adapters.
	out = cli(t, "overlap", p("a.shira"), p("b.shira"))
	t.Log(out)
	if !strings.Contains(out, "(overall)") || !strings.Contains(out, "AWOR") {
		t.Fatalf("overlap:\n%s", out)
	}
	cli(t, "overlap", p("rand.shira"), p("wm.shira"), p("struct.shira"))

	// ORT adapter file.
	t.Log(cli(t, "export-ort-adapter", "--model", dir, "--adapter", p("a.shira"), "-o", p("a.onnx_adapter")))
}
