package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/atomicfile"
	"github.com/shira-ort/shira-ort/internal/atomicfile/atomicfiletest"
	"github.com/shira-ort/shira-ort/internal/npyfile"
	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/models"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// otherTiny writes the demo model with one weight value changed: same
// names and shapes, another fingerprint.
func otherTiny(t *testing.T, path string) {
	t.Helper()
	m, err := onnxwire.ParseModel(append([]byte(nil), models.Tiny...), "")
	if err != nil {
		t.Fatal(err)
	}
	g, err := m.Graph()
	if err != nil {
		t.Fatal(err)
	}
	inits, err := g.Initializers()
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range inits {
		if d, _ := in.Dims(); len(d) == 2 {
			b, err := in.Data("")
			if err != nil {
				t.Fatal(err)
			}
			b = append([]byte(nil), b...)
			b[0] ^= 0x40
			in.SetRawData(b)
			break
		}
	}
	if err := os.WriteFile(path, m.Encode(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestWrongBaseAndForce: an adapter made for one model is refused on a
// model with the same tensors but other weights, the message naming both
// fingerprints; apply --force fuses it anyway; --force does not override
// a shape or name mismatch; run --force says it is pending.
func TestWrongBaseAndForce(t *testing.T) {
	tmp := t.TempDir()
	p := func(n string) string { return filepath.Join(tmp, n) }
	if err := os.WriteFile(p("a.onnx"), models.Tiny, 0o644); err != nil {
		t.Fatal(err)
	}
	otherTiny(t, p("b.onnx"))
	mustCLI(t, "export", p("a.onnx"), "-o", p("A"))
	mustCLI(t, "export", p("b.onnx"), "-o", p("B"))
	ma, mb := exportedManifest(t, p("A")), exportedManifest(t, p("B"))
	if ma.Fingerprint == mb.Fingerprint {
		t.Fatal("the two models have the same fingerprint")
	}
	mustCLI(t, "create", "--model", p("A"), "--density", "0.05", "--seed", "3", "-o", p("a.shira"))

	_, err := runCLI(t, "apply", "--model", p("B"), "--adapter", p("a.shira"), "-o", p("fused.onnx"))
	if !errors.Is(err, patch.ErrFingerprint) || !strings.Contains(err.Error(), ma.Fingerprint) ||
		!strings.Contains(err.Error(), mb.Fingerprint) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("apply on the wrong base: %v; want ErrFingerprint naming %s and %s and --force", err, ma.Fingerprint, mb.Fingerprint)
	}
	if _, err := os.Stat(p("fused.onnx")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused apply wrote its output: %v", err)
	}
	mustCLI(t, "apply", "--force", "--model", p("B"), "--adapter", p("a.shira"), "-o", p("fused.onnx"))
	if _, err := onnxwire.ReadModel(p("fused.onnx")); err != nil {
		t.Fatalf("apply --force output: %v", err)
	}
	// the right base still works without --force
	mustCLI(t, "apply", "--model", p("A"), "--adapter", p("a.shira"), "-o", p("fusedA.onnx"))

	// --force is no licence for a shape or name mismatch
	src := filepath.Join("..", "..", "models", "testdata", "fp16", "model.onnx")
	mustCLI(t, "export", src, "-o", p("F"))
	if _, err := runCLI(t, "apply", "--force", "--model", p("F"), "--adapter", p("a.shira"), "-o", p("bad.onnx")); err == nil {
		t.Fatal("apply --force accepted an adapter for other tensors")
	}
}

// TestWrongBaseRun checks the live session's refusal through the CLI.
func TestWrongBaseRun(t *testing.T) {
	orttest.Require(t)
	tmp := t.TempDir()
	p := func(n string) string { return filepath.Join(tmp, n) }
	if err := os.WriteFile(p("a.onnx"), models.Tiny, 0o644); err != nil {
		t.Fatal(err)
	}
	otherTiny(t, p("b.onnx"))
	mustCLI(t, "export", p("a.onnx"), "-o", p("A"))
	mustCLI(t, "export", p("b.onnx"), "-o", p("B"))
	ma, mb := exportedManifest(t, p("A")), exportedManifest(t, p("B"))
	mustCLI(t, "create", "--model", p("A"), "--density", "0.05", "--seed", "3", "-o", p("a.shira"))
	_, err := runCLI(t, "run", "--model", p("B"), "--adapter", p("a.shira"), "--output-dir", p("out"))
	if !errors.Is(err, patch.ErrFingerprint) || !strings.Contains(err.Error(), ma.Fingerprint) || !strings.Contains(err.Error(), mb.Fingerprint) ||
		!strings.Contains(err.Error(), "--force") || strings.Contains(err.Error(), "Options.") {
		t.Fatalf("run on the wrong base: %v; want ErrFingerprint naming both fingerprints and --force (not a Go option)", err)
	}
	// --force applies it anyway: the shapes fit.
	x, _ := tensor.FromFloat32([]int64{1, 16}, make([]float32, 16))
	if err := npyfile.WriteFile(p("x.npy"), x); err != nil {
		t.Fatal(err)
	}
	mustCLI(t, "run", "--force", "--model", p("B"), "--adapter", p("a.shira"), "--input", "x="+p("x.npy"), "--output-dir", p("out"))
	if _, err := os.Stat(p("out/y.npy")); err != nil {
		t.Fatalf("run --force wrote no output: %v", err)
	}
}

// crashEnv carries the CLI arguments (JSON) to TestCrashChild.
const crashEnv = "SHIRA_CRASH_CHILD"

// TestCrashChild is the child process of TestKilledWritesLeaveNoTornFiles:
// it runs the CLI with the arguments in crashEnv; the parent's
// atomicfiletest.PauseAt makes internal/atomicfile stop it at the chosen
// point of writing the chosen file, and the parent kills it there.
func TestCrashChild(t *testing.T) {
	js := os.Getenv(crashEnv)
	if js == "" {
		t.Skip("child of TestKilledWritesLeaveNoTornFiles")
	}
	var args []string
	if err := json.Unmarshal([]byte(js), &args); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, args...)
	t.Fatalf("the CLI finished without pausing: %v\n%s", err, out)
}

// killDuring runs the CLI in a child process and SIGKILLs it at stage
// ("write" or "commit") of writing the destination named file; it returns
// the killed writer's temporary file.
func killDuring(t *testing.T, stage, file string, args ...string) string {
	t.Helper()
	js, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	return atomicfiletest.KillWhilePaused(t, exec.Command(os.Args[0], "-test.run=^TestCrashChild$"),
		crashEnv+"="+string(js), atomicfiletest.PauseAt(stage, file))
}

// noJunk fails when dir holds a temporary file of any of names.
func noJunk(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		for _, n := range names {
			if atomicfile.IsTemp(e.Name(), n) || (strings.Contains(e.Name(), n) && e.Name() != n) {
				t.Errorf("%s: leftover %s", dir, e.Name())
			}
		}
	}
}

// readFile returns p's contents or fails the test.
func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKilledWritesLeaveNoTornFiles kills the CLI (SIGKILL, in a child
// process) while it writes an exported model, a fused model and an
// adapter over existing files. Each destination is afterwards the complete
// old file (or, for an export directory, a directory without a manifest,
// which nothing loads), never a partial or mixed one; the killed process
// leaves only a hidden temporary file, which the next successful write
// removes.
func TestKilledWritesLeaveNoTornFiles(t *testing.T) {
	tmp := t.TempDir()
	p := func(n string) string { return filepath.Join(tmp, n) }
	if err := os.WriteFile(p("a.onnx"), models.Tiny, 0o644); err != nil {
		t.Fatal(err)
	}
	otherTiny(t, p("b.onnx"))
	dir := p("exported")
	mustCLI(t, "export", p("a.onnx"), "-o", dir)
	old := map[string][]byte{}
	for _, f := range []string{export.ModelFile, export.WeightsFile, export.ManifestFile} {
		old[f] = readFile(t, filepath.Join(dir, f))
	}
	files := []string{export.ModelFile, export.WeightsFile, export.ManifestFile}

	t.Run("export killed writing the weights", func(t *testing.T) {
		tf := killDuring(t, "write", export.WeightsFile, "export", p("b.onnx"), "-o", dir)
		if _, err := os.Stat(tf); err != nil {
			t.Fatalf("expected the killed writer's temporary file: %v", err)
		}
		for _, f := range files {
			if !bytes.Equal(readFile(t, filepath.Join(dir, f)), old[f]) {
				t.Errorf("%s changed although the export was killed before any rename", f)
			}
		}
		if err := readExported(dir); err != nil {
			t.Fatalf("the old export no longer loads: %v", err)
		}
	})
	t.Run("export killed before the manifest", func(t *testing.T) {
		killDuring(t, "commit", export.ManifestFile, "export", p("b.onnx"), "-o", dir)
		// weights and model are new, the manifest is gone: nothing loads a torn directory
		if _, err := export.Open(dir); !errors.Is(err, export.ErrManifest) {
			t.Fatalf("Open of a half-replaced export: %v, want ErrManifest", err)
		}
	})
	mustCLI(t, "export", p("b.onnx"), "-o", dir)
	if err := readExported(dir); err != nil {
		t.Fatal(err)
	}
	noJunk(t, dir, files...)

	mustCLI(t, "create", "--model", dir, "--density", "0.05", "--seed", "1", "-o", p("a.shira"))
	mustCLI(t, "apply", "--model", dir, "--adapter", p("a.shira"), "-o", p("fused.onnx"))
	oldAdapter, oldFused := readFile(t, p("a.shira")), readFile(t, p("fused.onnx"))

	t.Run("create killed", func(t *testing.T) {
		killDuring(t, "commit", "a.shira", "create", "--model", dir, "--density", "0.05", "--seed", "2", "-o", p("a.shira"))
		if !bytes.Equal(readFile(t, p("a.shira")), oldAdapter) {
			t.Fatal("a.shira changed although create was killed before the rename")
		}
	})
	t.Run("apply killed", func(t *testing.T) {
		killDuring(t, "write", "fused.onnx", "apply", "--model", dir, "--adapter", p("a.shira"), "--adapter", p("a.shira"), "-o", p("fused.onnx"))
		if !bytes.Equal(readFile(t, p("fused.onnx")), oldFused) {
			t.Fatal("fused.onnx changed although apply was killed mid-write")
		}
	})
	// the next writes of the same files succeed and sweep the killed writers' temporaries
	mustCLI(t, "create", "--model", dir, "--density", "0.05", "--seed", "2", "-o", p("a.shira"))
	mustCLI(t, "apply", "--model", dir, "--adapter", p("a.shira"), "-o", p("fused.onnx"))
	if bytes.Equal(readFile(t, p("a.shira")), oldAdapter) {
		t.Fatal("create did not replace a.shira")
	}
	noJunk(t, tmp, "a.shira", "fused.onnx")
}

// exportedManifest opens an exported directory and returns its manifest.
func exportedManifest(t *testing.T, dir string) *export.Manifest {
	t.Helper()
	m, err := export.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	return m.Manifest()
}

// readExported opens an exported directory and reads all its weights.
func readExported(dir string) error {
	m, err := export.Open(dir)
	if err != nil {
		return err
	}
	defer m.Close()
	_, err = m.ReadWeights(context.Background())
	return err
}
