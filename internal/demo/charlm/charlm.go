// Package charlm prepares the demo text generator embedded by
// models/charlm (a small character-level transformer with one PEFT SHiRA
// and one LoRA checkpoint per style of text; docs/charlm.md).
//
// Prepare writes the files to a directory, exports the model with
// export.Expose and converts the SHiRA checkpoints to .shira adapters, which
// is what the demo, `shira-ort generate` and the tests start from.
package charlm

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	models "github.com/shira-ort/shira-ort/models/charlm"
	"github.com/shira-ort/shira-ort/peft"
)

// Files is the embedded model and checkpoints (models/charlm).
var Files = models.Files

// Styles lists the styles that have a SHiRA adapter, sorted.
func Styles() []string { return dirs("shira") }

// LoraStyles lists the styles that have a LoRA adapter, sorted.
func LoraStyles() []string { return dirs("lora") }

func dirs(root string) []string {
	es, err := fs.ReadDir(Files, root)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range es {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// WriteFiles copies the embedded files into dir, keeping their layout.
func WriteFiles(dir string) error {
	if err := os.CopyFS(dir, Files); err != nil {
		return fmt.Errorf("charlm: %w", err)
	}
	return nil
}

// Workspace is the prepared model: paths of the exported model, the
// vocabulary, the converted SHiRA adapters and the LoRA checkpoints.
type Workspace struct {
	// Dir is the directory everything was written to.
	Dir string
	// Exported is the export.Expose directory.
	Exported string
	// Model is the exported model, open (Close closes it).
	Model *export.Model
	// Vocab is the path of vocab.json.
	Vocab string
	// Shira maps each style to its converted .shira adapter.
	Shira map[string]string
	// Lora maps each style with a LoRA adapter to its PEFT checkpoint directory.
	Lora map[string]string
}

// Prepare writes the embedded files into dir, exports the model into
// dir/exported and converts every SHiRA checkpoint to dir/<style>.shira.
// Close the workspace when done.
func Prepare(ctx context.Context, dir string) (_ *Workspace, err error) {
	if err := WriteFiles(dir); err != nil {
		return nil, err
	}
	w := &Workspace{Dir: dir, Exported: filepath.Join(dir, "exported"), Vocab: filepath.Join(dir, "vocab.json"),
		Shira: map[string]string{}, Lora: map[string]string{}}
	if _, err := export.Expose(ctx, filepath.Join(dir, "model.onnx"), w.Exported, export.Options{}); err != nil {
		return nil, fmt.Errorf("charlm: export: %w", err)
	}
	m, err := export.Open(w.Exported)
	if err != nil {
		return nil, fmt.Errorf("charlm: %w", err)
	}
	w.Model = m
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	for _, s := range Styles() {
		p := filepath.Join(dir, s+".shira")
		if err := ConvertShira(filepath.Join(dir, "shira", s), m, s, p); err != nil {
			return nil, err
		}
		w.Shira[s] = p
	}
	for _, s := range LoraStyles() {
		w.Lora[s] = filepath.Join(dir, "lora", s)
	}
	return w, nil
}

// Close closes the exported model.
func (w *Workspace) Close() error { return w.Model.Close() }

// ConvertShira converts the PEFT SHiRA checkpoint in peftDir for the
// exported model m and writes it to out as a .shira adapter named name.
func ConvertShira(peftDir string, m *export.Model, name, out string) error {
	ck, err := peft.Open(peftDir)
	if err != nil {
		return fmt.Errorf("charlm: %w", err)
	}
	a, _, err := peft.ConvertShira(ck, m, peft.ConvertOptions{Name: name})
	if err != nil {
		return fmt.Errorf("charlm: convert %s: %w", peftDir, err)
	}
	if err := adapter.Write(out, a); err != nil {
		return fmt.Errorf("charlm: %w", err)
	}
	return nil
}
