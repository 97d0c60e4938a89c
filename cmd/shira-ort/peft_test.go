package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/internal/pefttest"
	"github.com/shira-ort/shira-ort/patch"
)

// TestPEFTConvertFuseExtractThroughCLI runs the adapter converters on the
// PEFT fixtures (models/peft): a converted PEFT SHiRA adapter patched into a
// session and a fused LoRA model match torch's merged outputs; LoRA → SHiRA
// reports its error; extract from the fine-tuned ONNX file keeps all the
// energy at density 0.2; every mask by density and by r; overlap; and the
// ORT adapter export.
func TestPEFTConvertFuseExtractThroughCLI(t *testing.T) {
	orttest.Require(t)
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "base")
	mustCLI(t, "export", pefttest.Path("base.onnx"), "-o", dir)
	p := func(n string) string { return filepath.Join(tmp, n) }

	// PEFT SHiRA -> .shira, patched session equals torch merged.
	t.Log(mustCLI(t, "convert", "--peft", pefttest.Path("shira_a"), "--model", dir, "-o", p("a.shira")))
	mustCLI(t, "convert", "--peft", pefttest.Path("shira_b"), "--model", dir, "-o", p("b.shira"))
	a, err := adapter.Open(p("a.shira"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if d := pefttest.MaxRelDiff(pefttest.RunExported(t, dir, patch.Default(a)), pefttest.Reference(t, "shira_a", "merged_out.npy")); d > 1e-5 {
		t.Fatalf("converted adapter: %g from torch", d)
	}

	// LoRA fuse and LoRA -> SHiRA.
	t.Log(mustCLI(t, "fuse-lora", "--lora", pefttest.Path("lora"), "--model", dir, "-o", p("lora.onnx")))
	if d := pefttest.MaxRelDiff(pefttest.RunModel(t, p("lora.onnx")), pefttest.Reference(t, "lora", "merged_out.npy")); d > 1e-5 {
		t.Fatalf("fuse-lora: %g from torch", d)
	}
	out := mustCLI(t, "convert", "--lora", pefttest.Path("lora"), "--density", "0.1", "--model", dir, "-o", p("l.shira"))
	if !strings.Contains(out, "rel_error") {
		t.Fatalf("no error report:\n%s", out)
	}

	// extract from the fine-tuned ONNX file.
	out = mustCLI(t, "extract", "--base", dir, "--tuned", pefttest.Path("tuned_a.onnx"), "--density", "0.2", "-o", p("x.shira"))
	if !strings.Contains(out, "energy kept 1.0000") {
		t.Fatalf("extract:\n%s", out)
	}

	// the three masks, by density and by r.
	for _, m := range []string{"rand", "wm", "struct"} {
		mustCLI(t, "create", "--model", dir, "--mask", m, "--density", "0.1", "-o", p(m+".shira"))
		t.Log(mustCLI(t, "create", "--model", dir, "--mask", m, "--r", "1", "-o", p(m+"-r.shira")))
	}

	// overlap of the two PEFT adapters and of two struct adapters.
	out = mustCLI(t, "overlap", p("a.shira"), p("b.shira"))
	t.Log(out)
	if !strings.Contains(out, "(overall)") || !strings.Contains(out, "AWOR") {
		t.Fatalf("overlap:\n%s", out)
	}
	mustCLI(t, "overlap", p("rand.shira"), p("wm.shira"), p("struct.shira"))

	// ORT adapter file.
	t.Log(mustCLI(t, "export-ort-adapter", "--model", dir, "--adapter", p("a.shira"), "-o", p("a.onnx_adapter")))
}
