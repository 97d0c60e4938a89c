package test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/internal/synth"
	"github.com/shira-ort/shira-ort/models"
)

// The README's imports for switchStyle (besides the standard library's
// bytes, context and fmt).
import (
	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// The README's Go code: every ```go block of README.md must appear,
// verbatim, in this file (TestReadmeGoBlocks), and the examples below run
// it, so the README's code compiles and works.

// switchStyle is the README's "Go in a page" (the README shows it from
// "func switchStyle" to its closing brace).
func switchStyle(ctx context.Context, model, exported, style string) error {
	if err := ort.Init(); err != nil { // finds libonnxruntime (`shira-ort setup` installs it)
		return err
	}
	if _, err := export.Expose(ctx, model, exported, export.Options{}); err != nil {
		return err // the weights of MatMul/Gemm/Conv become patchable
	}
	sess, err := ort.Open(ctx, exported, nil) // packed (the default): plain-ORT speed, bit-stable
	if err != nil {
		return err
	}
	defer sess.Close()
	a, err := adapter.Open(style) // mapped and validated; safe to close while active
	if err != nil {
		return err
	}
	defer a.Close()

	x, err := tensor.FromFloat32([]int64{1, 16}, make([]float32, 16))
	if err != nil {
		return err
	}
	in := map[string]*tensor.Tensor{"x": x}
	base, err := sess.Run(ctx, in)
	if err != nil {
		return err
	}
	if err := sess.Set(ctx, patch.Default(a)); err != nil { // scatter: the next Run is adapted
		return err
	}
	styled, err := sess.Run(ctx, in)
	if err != nil {
		return err
	}
	if err := sess.Revert(ctx); err != nil { // the saved originals go back
		return err
	}
	again, err := sess.Run(ctx, in)
	if err != nil {
		return err
	}
	fmt.Println("adapted:", !bytes.Equal(styled["y"].Data, base["y"].Data))
	fmt.Println("revert bit-exact:", bytes.Equal(again["y"].Data, base["y"].Data))
	return nil
}

// Example_switchStyle runs the README's Go code on the shipped tiny model
// with a synthetic adapter.
func Example_switchStyle() {
	dir, err := os.MkdirTemp("", "readme-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	model, style, err := readmeFixtures(dir)
	if err != nil {
		panic(err)
	}
	if err := switchStyle(context.Background(), model, filepath.Join(dir, "exported"), style); err != nil {
		panic(err)
	}
	// Output:
	// adapted: true
	// revert bit-exact: true
}

// readmeFixtures writes models/tiny as model.onnx into dir and an adapter
// made for its export as style.shira.
func readmeFixtures(dir string) (model, style string, err error) {
	model = filepath.Join(dir, "model.onnx")
	if err := os.WriteFile(model, models.Tiny, 0o644); err != nil {
		return "", "", err
	}
	pre := filepath.Join(dir, "pre-export")
	if _, err := export.Expose(context.Background(), model, pre, export.Options{}); err != nil {
		return "", "", err
	}
	m, err := export.Open(pre)
	if err != nil {
		return "", "", err
	}
	defer m.Close()
	w, err := m.ReadWeights(context.Background())
	if err != nil {
		return "", "", err
	}
	a, err := synth.New(m.Manifest(), w, synth.Options{Name: "style", Mask: synth.MaskRandom, Density: 0.02, Scale: 0.5, Seed: 1, Semantics: adapter.Delta})
	if err != nil {
		return "", "", err
	}
	style = filepath.Join(dir, "style.shira")
	return model, style, adapter.Write(style, a)
}

// TestReadmeGoBlocks checks that every ```go block of README.md appears
// verbatim in this file, so the examples above run what the README shows.
func TestReadmeGoBlocks(t *testing.T) {
	readme, err := os.ReadFile(repoPath("README.md"))
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.ReadFile(repoPath("test", "readme_test.go"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```go\n(.*?)```").FindAllSubmatch(readme, -1)
	if len(blocks) == 0 {
		t.Fatal("README.md has no go code block")
	}
	for _, b := range blocks {
		code := strings.TrimSpace(string(b[1]))
		if !strings.Contains(string(self), code) {
			first, _, _ := strings.Cut(code, "\n")
			t.Errorf("the README's go block starting %q is not in test/readme_test.go: copy the compiled code there (or from there)", first)
		}
	}
}
