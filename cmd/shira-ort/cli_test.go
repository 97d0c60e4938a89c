package main

import (
	"bytes"
	"context"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/internal/npyfile"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/models"
	"github.com/shira-ort/shira-ort/tensor"
)

// execCLI runs the CLI in-process over newRootCmd, as main does, and
// returns what it wrote to standard output and standard error.
func execCLI(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	cmd := newRootCmd()
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err = cmd.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// runCLI runs `shira-ort args...` in-process and returns its standard
// output and error; what it wrote to standard error goes to the test log.
func runCLI(t testing.TB, args ...string) (stdout string, err error) {
	t.Helper()
	stdout, stderr, err := execCLI(t.Context(), args...)
	if stderr != "" {
		t.Logf("shira-ort %s (stderr):\n%s", strings.Join(args, " "), stderr)
	}
	return stdout, err
}

// mustCLI is runCLI for a command that must succeed.
func mustCLI(t testing.TB, args ...string) string {
	t.Helper()
	out, err := runCLI(t, args...)
	if err != nil {
		t.Fatalf("shira-ort %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// exportTiny writes the shipped tiny MLP into a temporary directory tmp
// (src) and exports it with the CLI into tmp/exported (dir).
func exportTiny(t *testing.T) (tmp, src, dir string) {
	t.Helper()
	tmp = t.TempDir()
	src = filepath.Join(tmp, "tiny.onnx")
	if err := os.WriteFile(src, models.Tiny, 0o644); err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(tmp, "exported")
	mustCLI(t, "export", src, "-o", dir)
	return tmp, src, dir
}

// TestExportCreateRunEqualsApplyRun: through the CLI, export → create → run
// with the adapters gives bit for bit the outputs of apply → run on the
// fused model, and run without adapters gives the original model's
// outputs.
func TestExportCreateRunEqualsApplyRun(t *testing.T) {
	orttest.Require(t)
	tmp, src, dir := exportTiny(t)
	if out := mustCLI(t, "inspect", dir); !strings.Contains(out, "fc1.weight") {
		t.Fatalf("inspect dir:\n%s", out)
	}
	a := filepath.Join(tmp, "a.shira")
	b := filepath.Join(tmp, "b.shira")
	mustCLI(t, "create", "--model", dir, "--mask", "rand", "--density", "0.02", "--scale", "0.3", "--seed", "4", "-o", a)
	mustCLI(t, "create", "--model", dir, "--mask", "wm", "--density", "0.02", "--scale", "0.3", "--seed", "5", "--semantics", "overwrite", "-o", b)
	if out := mustCLI(t, "inspect", "--json", a); !strings.Contains(out, `"semantics": "delta"`) {
		t.Fatalf("inspect adapter:\n%s", out)
	}

	x, _ := tensor.FromFloat32([]int64{3, 16}, func() []float32 {
		v := make([]float32, 48)
		for i := range v {
			v[i] = float32(i%7)*0.3 - 1
		}
		return v
	}())
	xPath := filepath.Join(tmp, "x.npy")
	if err := npyfile.WriteFile(xPath, x); err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) []byte {
		out := filepath.Join(tmp, name)
		mustCLI(t, append([]string{"run", "--input", "x=" + xPath, "--output-dir", out}, args...)...)
		y, err := npyfile.ReadFile(filepath.Join(out, "y.npy"))
		if err != nil {
			t.Fatal(err)
		}
		return y.Data
	}
	fused := filepath.Join(tmp, "fused.onnx")
	mustCLI(t, "apply", "--model", dir, "--adapter", a+":0.8", "--adapter", b+":0.5", "-o", fused)

	live := run("live", "--model", dir, "--adapter", a+":0.8", "--adapter", b+":0.5")
	offline := run("offline", "--model", fused)
	base := run("base", "--model", dir)
	original := run("original", "--model", src)
	if !bytes.Equal(live, offline) {
		t.Error("run with adapters != run on the apply-fused model")
	}
	if bytes.Equal(live, base) {
		t.Error("adapters did not change the output")
	}
	if !bytes.Equal(base, original) {
		t.Error("exported model without adapters != original model")
	}
}

func TestAdapterSpec(t *testing.T) {
	for in, want := range map[string]adapterSpec{
		"a.shira":         {Path: "a.shira"},
		"a.shira:0.5":     {Path: "a.shira", Alpha: 0.5},
		"dir:x/a.shira:2": {Path: "dir:x/a.shira", Alpha: 2},
	} {
		got, err := parseAdapterSpec(in)
		if err != nil || got.Path != want.Path || (want.Alpha != 0 && got.Alpha != want.Alpha) {
			t.Errorf("parseAdapterSpec(%q) = %+v, %v", in, got, err)
		}
	}
	for _, alpha := range []string{"NaN", "inf", "-Inf", "1e39", "-3.5e38", "0x1p128"} {
		_, err := parseAdapterSpec("a.shira:" + alpha)
		if want := "alpha " + alpha + " is not a finite float32"; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("alpha %s: %v, want an error saying %q", alpha, err, want)
		}
	}
	// A path that really contains ':' is taken whole when it exists.
	dir := t.TempDir()
	for _, name := range []string{"x.shira:1e39", "x.shira:inf", "b:c.shira"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if got, err := parseAdapterSpec(p); err != nil || got.Path != p || !math.IsNaN(float64(got.Alpha)) {
			t.Errorf("parseAdapterSpec(%q) of an existing file = %+v, %v", p, got, err)
		}
	}
}

func TestDemo(t *testing.T) {
	orttest.Require(t)
	var out bytes.Buffer
	if err := runDemo(t.Context(), &out, t.TempDir()); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "bit for bit") {
		t.Fatalf("demo output:\n%s", out.String())
	}
}

// TestCommandLineErrors: cobra refuses a missing required flag or flags
// that do not go together before the command runs, naming the flags, and
// main adds the command's usage line to those errors (and to flags it
// cannot parse), not to errors of a command that ran.
func TestCommandLineErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	for _, c := range []struct {
		args  []string
		want  string // in the error
		usage bool
	}{
		{[]string{"apply", "--model", missing}, `required flag(s) "adapter", "output" not set`, true},
		{[]string{"convert", "--model", missing, "-o", "a.shira"}, "[peft lora]", true},
		{[]string{"convert", "--lora", missing, "--model", missing, "-o", "a.shira"}, "missing [density]", true},
		{[]string{"create", "--model", missing, "-o", "a.shira", "--r", "2", "--density", "0.1"}, "[density r]", true},
		{[]string{"run", "--model", missing, "--output-dir", missing, "--threads", "x"}, `"--threads"`, true},
		{[]string{"export"}, "accepts 1 arg", true},
		{[]string{"apply", "--model", missing, "--adapter", "a.shira", "-o", "f.onnx"}, "missing", false},
	} {
		root := newRootCmd()
		root.SetArgs(c.args)
		root.SetOut(io.Discard)
		cmd, err := root.ExecuteC()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one containing %q", c.args, err, c.want)
			continue
		}
		hint := usageHint(cmd, err)
		if got := strings.HasPrefix(hint, "usage: shira-ort "+c.args[0]+" "); got != c.usage {
			t.Errorf("%v: usage hint %q, want one: %v", c.args, hint, c.usage)
		}
	}
}
