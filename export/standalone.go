package export

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/shira-ort/shira-ort/internal/atomicfile"
	"github.com/shira-ort/shira-ort/internal/onnxwire"
)

// WriteStandalone writes to outPath a self-contained ONNX model built from
// the exported model. Every exposed weight becomes a plain constant
// initializer (removed from graph.input), holding weights[name] when present
// (this is how offline-fused adapters are baked in, see Fuse; the length
// must match) and the bytes in the weight file otherwise; every other
// external tensor is inlined too.
//
// When the inlined model would exceed the 2 GB protobuf limit, the tensor
// bytes go to one external file OUT.data beside the model instead (same
// page alignment as the manifest), referenced by its base name. Files are
// written under temporary names and renamed into place (the data file
// first, after removing an old outPath, so an old model never reads a new
// data file). An outPath (or data file) that is one of the files the
// model is read from (the exported directory's model.onnx, weight file and
// manifest.json, other external data of the model), however it is named,
// is refused with ErrOverwritesInput before anything is written.
func (m *Model) WriteStandalone(ctx context.Context, weights map[string][]byte, outPath string) error {
	return m.WithWeightFile(func(wf *os.File, _ int64) error {
		return writeStandalone(ctx, m.dir, m.manifest, m.graph, wf, weights, outPath)
	})
}

func writeStandalone(ctx context.Context, dir string, m *Manifest, graph []byte, wf *os.File, weights map[string][]byte, outPath string) error {
	for name, b := range weights {
		e := m.Entry(name)
		if e == nil {
			return fmt.Errorf("export: standalone: weight %q is not an exposed tensor of %s", name, dir)
		}
		if int64(len(b)) != e.Length {
			return fmt.Errorf("export: standalone: weight %q has %d bytes, want %d (%v %v)", name, len(b), e.Length, e.DType, e.Shape)
		}
	}
	model, err := onnxwire.ParseModel(graph, dir)
	if err != nil {
		return fmt.Errorf("export: standalone: %w", err)
	}
	g, err := model.Graph()
	if err != nil {
		return fmt.Errorf("export: standalone: %w", err)
	}

	// collect the tensors to inline: exposed initializers, then externals
	type item struct {
		t     *onnxwire.Tensor
		entry *TensorEntry
		size  int64
	}
	var items []item
	seen := map[*onnxwire.Message]bool{}
	exposedNames := map[string]bool{}
	inits, err := g.Initializers()
	if err != nil {
		return fmt.Errorf("export: standalone: %w", err)
	}
	for _, t := range inits {
		if e := m.Entry(t.Name()); e != nil && !exposedNames[e.Name] {
			items = append(items, item{t, e, e.Length})
			seen[t.Message] = true
			exposedNames[e.Name] = true
		}
	}
	for _, e := range m.Tensors {
		if !exposedNames[e.Name] {
			return fmt.Errorf("export: standalone: %w: exposed tensor %q is not an initializer of %s", ErrManifest, e.Name, m.Model)
		}
	}
	err = model.WalkTensors(func(t *onnxwire.Tensor) error {
		if seen[t.Message] || !t.IsExternal() {
			return nil
		}
		n, err := t.NumBytes()
		if err != nil {
			return err
		}
		items = append(items, item{t: t, size: n})
		return nil
	})
	if err != nil {
		return fmt.Errorf("export: standalone: %w", err)
	}
	g.RemoveInputs(exposedNames)

	projected := int64(model.Size())
	for _, it := range items {
		projected += it.size + 16 // payload + tag/length overhead
	}
	inline := projected <= maxProto
	dataName := filepath.Base(outPath) + ".data"
	dataPath := filepath.Join(filepath.Dir(outPath), dataName)
	outputs := []string{outPath}
	if !inline {
		outputs = append(outputs, dataPath)
	}
	if err := checkStandaloneOutputs(model, dir, m, wf, outputs); err != nil {
		return err
	}
	bytesOf := func(it item) ([]byte, error) {
		if it.entry == nil {
			return it.t.Data(dir)
		}
		if b, ok := weights[it.entry.Name]; ok {
			return b, nil
		}
		return readEntry(wf, it.entry)
	}

	var df, mf *pending
	defer func() { df.discard(); mf.discard() }()
	if inline {
		for _, it := range items {
			if err := ctx.Err(); err != nil {
				return err
			}
			b, err := bytesOf(it)
			if err != nil {
				return fmt.Errorf("export: standalone: %w", err)
			}
			it.t.SetRawData(b)
		}
	} else {
		if df, err = createPending(dataPath); err != nil {
			return err
		}
		align := m.Alignment
		if align <= 0 {
			align = DefaultAlignment
		}
		aw := newAlignedWriter(df.f, align)
		for _, it := range items {
			if err := ctx.Err(); err != nil {
				return err
			}
			// streamed tensor by tensor: nothing but weights[...] is held in memory
			off, err := putStandalone(aw, dir, wf, it.t, it.entry, it.size, weights)
			if err != nil {
				return fmt.Errorf("export: standalone: %w", err)
			}
			it.t.SetExternal(onnxwire.ExternalData{Location: dataName, Offset: off, Length: it.size})
		}
		if err := aw.finish(); err != nil {
			return err
		}
	}
	if mf, err = createPending(outPath); err != nil {
		return err
	}
	if _, err := model.WriteTo(mf.f); err != nil {
		return fmt.Errorf("export: standalone: write model: %w", err)
	}
	if df != nil {
		// an old model must never read the new data file: remove it first
		// (a crash before the model's rename leaves no model, not a torn one)
		if err := atomicfile.Remove(outPath); err != nil {
			return fmt.Errorf("export: standalone: %w", err)
		}
		if err := df.commit(); err != nil {
			return err
		}
	}
	return mf.commit()
}

// checkStandaloneOutputs refuses (ErrOverwritesInput) outputs that are
// files the standalone model is made from: the exported directory's model,
// manifest and weight file (wf, as opened), and the external files of
// model.
func checkStandaloneOutputs(model *onnxwire.Model, dir string, m *Manifest, wf *os.File, outputs []string) error {
	fi, err := wf.Stat()
	if err != nil {
		return fmt.Errorf("export: standalone: %w", err)
	}
	inputs := []input{{what: "the weight file of " + dir, fi: fi}}
	for _, name := range []string{m.Model, ManifestFile} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err == nil {
			inputs = append(inputs, input{what: name + " of " + dir, fi: fi})
		}
	}
	ext, err := externalInputs(model, dir)
	if err != nil {
		return fmt.Errorf("export: standalone: %w", err)
	}
	return checkOutputs(outputs, append(inputs, ext...))
}

// putStandalone streams one tensor into the standalone data file: a given
// weight from memory, an exposed weight from the weight file (checking its
// sha256), any other external tensor from its own file.
func putStandalone(aw *alignedWriter, dir string, wf *os.File, t *onnxwire.Tensor, e *TensorEntry, size int64, weights map[string][]byte) (int64, error) {
	if e == nil {
		r, n, closeFn, err := t.Open(dir)
		if err != nil {
			return 0, err
		}
		defer closeFn()
		off, _, err := aw.put(r, n)
		return off, err
	}
	if b, ok := weights[e.Name]; ok {
		off, _, err := aw.put(bytes.NewReader(b), size)
		return off, err
	}
	off, sum, err := aw.put(io.NewSectionReader(wf, e.Offset, e.Length), e.Length)
	if err != nil {
		return 0, err
	}
	if sum != e.SHA256 {
		return 0, fmt.Errorf("%w: weight %q: sha256 mismatch in %s (file changed since export?)", ErrManifest, e.Name, wf.Name())
	}
	return off, nil
}
