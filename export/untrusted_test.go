//go:build unix

package export

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/internal/onnxwire/onnxwiretest"
	"github.com/shira-ort/shira-ort/internal/testutil"
	"github.com/shira-ort/shira-ort/tensor"
)

// within fails the test when fn does not return within 10 s (reading a
// FIFO must not block).
func within(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s hangs", what)
	}
}

// TestExposeExternalDataStaysInside: Expose reads external data only from
// regular files inside the source model's directory once symbolic links
// are followed (as ONNX Runtime does, "escapes model directory"), and a
// FIFO is refused instead of blocking the export forever.
func TestExposeExternalDataStaysInside(t *testing.T) {
	src := onnxwiretest.UntrustedDir(t)
	for _, loc := range []string{"w.bin", "in.bin", "data/w.bin"} {
		mp := writeModel(t, externalModel(loc), src)
		out := filepath.Join(t.TempDir(), "out")
		man, err := Expose(context.Background(), mp, out, Options{})
		if err != nil {
			t.Fatalf("location %q: %v", loc, err)
		}
		if got := entryBytes(t, out, man.Entry("W")); !bytes.Equal(got, seq(16, 1)) {
			t.Errorf("location %q: exported %v", loc, got)
		}
	}
	for loc, want := range map[string]error{
		"out.bin":          ErrEscapesModelDir,
		"lnk/secret.bin":   ErrEscapesModelDir,
		"lnk/m/c1":         ErrEscapesModelDir,
		"c1":               ErrEscapesModelDir,
		"../secret.bin":    ErrEscapesModelDir,
		"/etc/passwd":      ErrEscapesModelDir,
		"data/../../x.bin": ErrEscapesModelDir,
		"fifo":             ErrNotRegularFile,
		"data":             ErrNotRegularFile,
		"lnk/m/data/../w":  os.ErrNotExist,
	} {
		mp := writeModel(t, externalModel(loc), src)
		out := filepath.Join(t.TempDir(), "out")
		within(t, "export of external data "+loc, func() {
			_, err := Expose(context.Background(), mp, out, Options{})
			if !errors.Is(err, want) {
				t.Errorf("location %q: %v, want %v", loc, err, want)
			}
		})
		noSecretIn(t, out)
	}
}

// noSecretIn fails when a file under dir holds 8 bytes of
// onnxwiretest.Secret (its pattern) or more.
func noSecretIn(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, onnxwiretest.Secret[:8]) {
				t.Errorf("%s holds the bytes of a file outside the source directory", p)
			}
		}
		return nil
	})
}

// TestOpenRefusesUntrustedDirectoryFiles: the files an exported directory
// consists of are read like external data: a weight file, model or
// manifest that is a link out of the directory or a FIFO is refused (and
// does not block Open).
func TestOpenRefusesUntrustedDirectoryFiles(t *testing.T) {
	src := writeModel(t, mixedModel(), t.TempDir())
	for _, name := range []string{WeightsFile, ModelFile, ManifestFile} {
		for what, want := range map[string]error{"link": ErrEscapesModelDir, "fifo": ErrNotRegularFile} {
			out := filepath.Join(t.TempDir(), "out")
			if _, err := Expose(context.Background(), src, out, Options{}); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(out, name)
			// the link points to a faithful copy: only where it lies is wrong
			cp := filepath.Join(t.TempDir(), name)
			if err := os.Rename(p, cp); err != nil {
				t.Fatal(err)
			}
			var err error
			if what == "link" {
				err = os.Symlink(cp, p)
			} else {
				err = syscall.Mkfifo(p, 0o644)
			}
			if err != nil {
				t.Fatal(err)
			}
			within(t, "Open with "+name+" a "+what, func() {
				m, err := Open(out)
				if err == nil {
					m.Close()
				}
				if !errors.Is(err, want) || !errors.Is(err, ErrManifest) {
					t.Errorf("%s a %s: Open = %v, want ErrManifest and %v", name, what, err, want)
				}
			})
		}
	}
}

// TestWriteStandaloneExternalDataStaysInside: a tensor of an exported
// model.onnx whose data is external elsewhere than the weight file is read
// under the same rules.
func TestWriteStandaloneExternalDataStaysInside(t *testing.T) {
	src := onnxwiretest.UntrustedDir(t)
	out := filepath.Join(src, "out")
	b := externalModel("w.bin")
	b.AddInitializer(onnxwire.TensorSpec{Name: "bias", DType: tensor.Float32, Dims: []int64{16},
		External: &onnxwire.ExternalData{Location: "w.bin", Length: 64}}.Tensor())
	if _, err := Expose(context.Background(), writeModel(t, b, src), out, Options{}); err != nil {
		t.Fatal(err)
	}
	// point bias (not exposed, so not in the manifest) at a link out of
	// the export directory: ../out.bin -> ../secret.bin
	x := loadExported(t, filepath.Join(out, ModelFile))
	for loc, want := range map[string]error{"bias.bin": ErrEscapesModelDir, "fifo": ErrNotRegularFile} {
		x.inits["bias"].SetExternal(onnxwire.ExternalData{Location: loc, Length: 64})
		if err := os.WriteFile(filepath.Join(out, ModelFile), x.model.Encode(), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Remove(filepath.Join(out, loc))
		var err error
		if loc == "fifo" {
			err = syscall.Mkfifo(filepath.Join(out, loc), 0o644)
		} else {
			err = os.Symlink("../out.bin", filepath.Join(out, loc))
		}
		if err != nil {
			t.Fatal(err)
		}
		m := openT(t, out)
		dest := filepath.Join(t.TempDir(), "s.onnx")
		within(t, "WriteStandalone with "+loc, func() {
			if err := m.WriteStandalone(context.Background(), nil, dest); !errors.Is(err, want) {
				t.Errorf("%s: WriteStandalone = %v, want %v", loc, err, want)
			}
		})
		noSecretIn(t, filepath.Dir(dest))
	}
}

// dirState returns the names and contents of dir's files.
func dirState(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := map[string]string{}
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		st[e.Name()] = string(b)
	}
	return st
}

// unchanged fails when dir's files differ from before.
func unchanged(t *testing.T, what, dir string, before map[string]string) {
	t.Helper()
	after := dirState(t, dir)
	for name, b := range before {
		if a, ok := after[name]; !ok || a != b {
			t.Errorf("%s: %s changed or vanished", what, name)
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			t.Errorf("%s: %s appeared", what, name)
		}
	}
}

// TestExposeRefusesToOverwriteItsInputs: an export whose output files
// would replace the source model or one of its external-data files (the
// output directory is the source's, reached by any path, or holds hard
// links to them) is refused with ErrOverwritesInput before anything is
// written.
func TestExposeRefusesToOverwriteItsInputs(t *testing.T) {
	// source model.onnx in the output directory
	dir := t.TempDir()
	src := filepath.Join(dir, ModelFile)
	if err := mixedModel().WriteFile(src); err != nil {
		t.Fatal(err)
	}
	via := filepath.Join(t.TempDir(), "via")
	if err := os.Symlink(dir, via); err != nil {
		t.Fatal(err)
	}
	linked := t.TempDir()
	if err := os.Link(src, filepath.Join(linked, ModelFile)); err != nil {
		t.Fatal(err)
	}
	// source src.onnx whose external data is called model.weights
	extDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(extDir, WeightsFile), seq(16, 1), 0o644); err != nil {
		t.Fatal(err)
	}
	extSrc := writeModel(t, externalModel(WeightsFile), extDir)
	for _, c := range []struct{ what, src, out string }{
		{"into the source's directory", src, dir},
		{"into the source's directory through a link", src, via},
		{"beside a hard link of the source", src, linked},
		{"over its external data", extSrc, extDir},
	} {
		before := dirState(t, c.out)
		_, err := Expose(context.Background(), c.src, c.out, Options{})
		if !errors.Is(err, ErrOverwritesInput) {
			t.Errorf("%s: %v, want ErrOverwritesInput", c.what, err)
		}
		unchanged(t, c.what, c.out, before)
	}
}

// TestWriteStandaloneRefusesToOverwriteItsInputs: WriteStandalone refuses
// (ErrOverwritesInput) an output that is one of the exported directory's
// files or an external-data file of its model, however it is reached, and
// leaves them alone.
func TestWriteStandaloneRefusesToOverwriteItsInputs(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	if _, err := Expose(context.Background(), writeModel(t, mixedModel(), t.TempDir()), out, Options{}); err != nil {
		t.Fatal(err)
	}
	via := filepath.Join(t.TempDir(), "via")
	if err := os.Symlink(out, via); err != nil {
		t.Fatal(err)
	}
	linked := filepath.Join(t.TempDir(), "w")
	if err := os.Link(filepath.Join(out, WeightsFile), linked); err != nil {
		t.Fatal(err)
	}
	m := openT(t, out)
	before := dirState(t, out)
	for _, p := range []string{
		filepath.Join(out, ModelFile), filepath.Join(out, WeightsFile), filepath.Join(out, ManifestFile),
		filepath.Join(via, ModelFile), linked,
	} {
		if err := m.WriteStandalone(context.Background(), nil, p); !errors.Is(err, ErrOverwritesInput) {
			t.Errorf("WriteStandalone to %s: %v, want ErrOverwritesInput", p, err)
		}
	}
	unchanged(t, "WriteStandalone", out, before)
	if b, err := os.ReadFile(linked); err != nil || string(b) != before[WeightsFile] {
		t.Errorf("the hard link of the weight file changed: %v", err)
	}

	// the data file of the 2 GB fallback (OUT.data) counts too: make the
	// model read one of its tensors from s.onnx.data
	x := loadExported(t, filepath.Join(out, ModelFile))
	x.inits["bias"].SetExternal(onnxwire.ExternalData{Location: "s.onnx.data", Length: 20})
	if err := os.WriteFile(filepath.Join(out, "s.onnx.data"), seq(5, 0), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, ModelFile), x.model.Encode(), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.Replace(t, &maxProto, 100) // force the fallback
	before = dirState(t, out)
	if err := openT(t, out).WriteStandalone(context.Background(), nil, filepath.Join(out, "s.onnx")); !errors.Is(err, ErrOverwritesInput) {
		t.Errorf("WriteStandalone whose data file is an input: %v, want ErrOverwritesInput", err)
	}
	unchanged(t, "WriteStandalone fallback", out, before)
}
