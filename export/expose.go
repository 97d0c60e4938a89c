package export

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/shira-ort/shira-ort/internal/atomicfile"
	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/tensor"
)

// ErrNoTargets reports that no weight qualified (or none matched Targets).
var ErrNoTargets = errors.New("export: no patchable weights")

// Options tune Expose.
type Options struct {
	// Targets, when set, keeps only weights whose exposed name, source name
	// or a consuming node's name matches.
	Targets *regexp.Regexp
	// Alignment of tensors in the weight file; 0 means DefaultAlignment.
	Alignment int64
}

// maxProto is the protobuf message size limit (2 GB - 1); a variable so
// tests can exercise the external-data fallback of WriteStandalone.
var maxProto int64 = math.MaxInt32

// Expose exports the model at modelPath into outDir (created if missing):
// model.onnx with the chosen weights as overridable initializers,
// model.weights with their bytes (and every other external tensor), and
// manifest.json. See the package documentation for the rules.
//
// External data of the source model is read only from regular files
// inside the source model's directory, after following symbolic links
// (links that stay inside are followed); other locations are refused with
// an error wrapping ErrEscapesModelDir or ErrNotRegularFile, as ONNX
// Runtime refuses them.
//
// An export that would replace the source model or one of its external
// files (outDir is the source's directory) is refused with
// ErrOverwritesInput before anything is written. Files are written under
// temporary names and renamed into place, the manifest last (an old manifest is removed first): a process killed at
// any point leaves either the old directory, a directory without a
// manifest (which Open refuses), or the complete new export. ctx is checked
// between tensors; a cancelled Expose leaves the old directory or none.
func Expose(ctx context.Context, modelPath, outDir string, opts Options) (*Manifest, error) {
	align := opts.Alignment
	if align == 0 {
		align = DefaultAlignment
	}
	if align < 0 {
		return nil, fmt.Errorf("export: alignment %d must be positive", align)
	}
	raw, err := os.ReadFile(modelPath)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	srcInfo, err := os.Stat(modelPath)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	srcDir := filepath.Dir(modelPath)
	model, err := onnxwire.ParseModel(raw, srcDir)
	if err != nil {
		return nil, fmt.Errorf("export: %s: %w", modelPath, err)
	}
	g, err := model.Graph()
	if err != nil {
		return nil, fmt.Errorf("export: %s: %w", modelPath, err)
	}
	if err := checkIO(g); err != nil { // what Expose writes, Open must read
		return nil, fmt.Errorf("export: %s: %w", modelPath, err)
	}
	ix, err := indexGraph(g)
	if err != nil {
		return nil, fmt.Errorf("export: %s: %w", modelPath, err)
	}
	all, err := ix.findCandidates()
	if err != nil {
		return nil, fmt.Errorf("export: %s: %w", modelPath, err)
	}
	var chosen []*candidate
	var skipped []string // quantized weights whose form is not supported
	for _, c := range all {
		ix.planFold(c)
		if !c.matches(opts.Targets) {
			continue
		}
		if c.dtype.IsQuantCode() {
			q, note, err := ix.quantOf(c, srcDir)
			if err != nil {
				return nil, fmt.Errorf("export: %s: %w", modelPath, err)
			}
			if note != "" {
				skipped = append(skipped, "not exposed: "+note)
				continue
			}
			c.quant = q
		}
		chosen = append(chosen, c)
	}
	if len(chosen) == 0 {
		return nil, noTargetsError(modelPath, all, opts.Targets)
	}

	ext, err := externalInputs(model, srcDir)
	if err != nil {
		return nil, fmt.Errorf("export: %s: %w", modelPath, err)
	}
	inputs := append([]input{{what: "the source model", fi: srcInfo}}, ext...)
	if err := checkOutputs([]string{filepath.Join(outDir, WeightsFile), filepath.Join(outDir, ModelFile),
		filepath.Join(outDir, ManifestFile)}, inputs); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	sum := sha256.Sum256(raw)
	man := &Manifest{Format: Format, Model: ModelFile, WeightsFile: WeightsFile, Alignment: align,
		Source: SourceModel{Path: filepath.Base(modelPath), SHA256: hex.EncodeToString(sum[:])}}

	ir, err := model.IRVersion()
	if err != nil {
		return nil, fmt.Errorf("export: ir_version: %w", err)
	}
	if ir < 4 {
		model.SetIRVersion(4)
		man.IRVersionOriginal = ir
		man.Notes = append(man.Notes, fmt.Sprintf("ir_version raised from %d to 4 so that initializers listed in graph.input are overridable", ir))
		ir = 4
	}
	man.Notes = append(man.Notes, skipped...)
	man.IRVersion = ir
	opsets, err := model.Opsets()
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	for _, o := range opsets {
		man.Opsets = append(man.Opsets, Opset(o))
	}

	wf, err := createPending(filepath.Join(outDir, WeightsFile))
	if err != nil {
		return nil, err
	}
	var mf, jf *pending
	defer func() { wf.discard(); mf.discard(); jf.discard() }()
	aw := newAlignedWriter(wf.f, align)

	exposed := map[*onnxwire.Message]bool{}
	for _, c := range chosen {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e, t, note, err := exposeOne(ix, c, aw, srcDir)
		if err != nil {
			return nil, err
		}
		if note != "" {
			man.Notes = append(man.Notes, note)
		}
		exposed[t.Message] = true
		man.Tensors = append(man.Tensors, *e)
		if c.blocked != "" {
			man.Notes = append(man.Notes, fmt.Sprintf("%s: Transpose not folded (%s); it runs on every Run", c.source, c.blocked))
		}
	}
	// every other external tensor moves into the weight file
	err = model.WalkTensors(func(t *onnxwire.Tensor) error {
		if exposed[t.Message] || !t.IsExternal() {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		r, size, closeFn, err := t.Open(srcDir)
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
		off, _, err := aw.put(r, size)
		closeFn()
		if err != nil {
			return fmt.Errorf("export: tensor %q: %w", t.Name(), err)
		}
		t.SetExternal(onnxwire.ExternalData{Location: WeightsFile, Offset: off, Length: size})
		man.External = append(man.External, ExternalEntry{Name: t.Name(), Offset: off, Length: size})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := aw.finish(); err != nil {
		return nil, err
	}
	man.Fingerprint = Fingerprint(man.Tensors)

	if size := int64(model.Size()); size > maxProto {
		return nil, fmt.Errorf("export: exported model would be %d bytes, over the 2 GB protobuf limit", size)
	}
	if mf, err = createPending(filepath.Join(outDir, ModelFile)); err != nil {
		return nil, err
	}
	if _, err := model.WriteTo(mf.f); err != nil {
		return nil, fmt.Errorf("export: write model: %w", err)
	}
	js, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("export: manifest: %w", err)
	}
	if jf, err = createPending(filepath.Join(outDir, ManifestFile)); err != nil {
		return nil, err
	}
	if _, err := jf.f.Write(append(js, '\n')); err != nil {
		return nil, fmt.Errorf("export: manifest: %w", err)
	}
	// The manifest marks the directory as complete: remove an old one
	// before replacing the files, so a crash between the renames leaves a
	// directory Open refuses, never new weights under an old
	// manifest; the new manifest is renamed into place last.
	if err := atomicfile.Remove(filepath.Join(outDir, ManifestFile)); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	for _, p := range []*pending{wf, mf, jf} {
		if err := p.commit(); err != nil {
			return nil, err
		}
	}
	return man, nil
}

func noTargetsError(modelPath string, all []*candidate, re *regexp.Regexp) error {
	if len(all) == 0 {
		return fmt.Errorf("%w in %s: no rank>=2 float initializer or Constant feeds a MatMul, Gemm or Conv weight input", ErrNoTargets, modelPath)
	}
	names := make([]string, 0, len(all))
	for _, c := range all {
		if len(names) == 20 {
			names = append(names, fmt.Sprintf("... (%d more)", len(all)-20))
			break
		}
		names = append(names, c.name)
	}
	return fmt.Errorf("%w matched --targets %s; candidates: %s", ErrNoTargets, re, strings.Join(names, ", "))
}

// exposeOne writes c's bytes to the weight file and rewrites the graph so
// that c is an overridable initializer. It returns the manifest entry, the
// exposed TensorProto and a note for the manifest ("" when none).
func exposeOne(ix *graphIndex, c *candidate, aw *alignedWriter, srcDir string) (*TensorEntry, *onnxwire.Tensor, string, error) {
	g := ix.g
	shape := c.exposedShape()
	e := &TensorEntry{Name: c.name, DType: c.dtype, Shape: shape,
		Source: TensorSource{Name: c.source, Shape: c.dims, FromConstant: c.constNode != nil}, Quant: c.quant}
	var err error
	if e.Consumers, err = c.consumers(); err != nil {
		return nil, nil, "", err
	}
	// the bytes
	var r io.Reader
	var size int64
	if c.fold {
		data, err := c.tensor.Data(srcDir)
		if err != nil {
			return nil, nil, "", fmt.Errorf("export: %w", err)
		}
		if data, err = transposeBytes(data, c.dims, c.perm, c.dtype.Size()); err != nil {
			return nil, nil, "", fmt.Errorf("export: %s: %w", c.source, err)
		}
		r, size = bytes.NewReader(data), int64(len(data))
		e.Source.Perm = c.perm
	} else {
		var closeFn func() error
		if r, size, closeFn, err = c.tensor.Open(srcDir); err != nil {
			return nil, nil, "", fmt.Errorf("export: %w", err)
		}
		defer closeFn()
	}
	if e.Offset, e.SHA256, err = aw.put(r, size); err != nil {
		return nil, nil, "", fmt.Errorf("export: tensor %q: %w", c.name, err)
	}
	e.Length = size
	ext := onnxwire.ExternalData{Location: WeightsFile, Offset: e.Offset, Length: size}

	// the graph
	t := c.tensor
	if c.fold {
		t = onnxwire.NewTensor(c.name, c.dtype, shape, nil)
	}
	t.SetExternal(ext)
	switch {
	case c.constNode != nil:
		g.RemoveNode(c.constNode)
		t.SetName(c.name)
		g.AddInitializer(t)
	case c.fold:
		g.ReplaceInitializer(c.tensor, t)
	}
	if c.fold {
		if err := foldTransposes(ix, c); err != nil {
			return nil, nil, "", err
		}
		for _, n := range c.paths[0].chain {
			if n.OpType() == "Transpose" {
				e.Source.FoldedNodes = append(e.Source.FoldedNodes, n.Name())
			}
		}
	}
	if ix.inputs[c.name] {
		note, err := declareInput(g, c.name, c.dtype, shape)
		return e, t, note, err
	}
	g.AddInput(onnxwire.NewTensorValueInfo(c.name, c.dtype, shape, nil))
	ix.inputs[c.name] = true
	return e, t, "", nil
}

// declareInput makes the graph.input entry of the exposed weight name,
// which the source model already lists, declare the weight's static type
// (Open, and so package ort, checks the exposed weights against it). A
// declaration without a shape or with symbolic dimensions, which ONNX
// Runtime accepts for an initializer, is rewritten (the returned note says
// so); one that contradicts the initializer is refused.
func declareInput(g *onnxwire.Graph, name string, dtype tensor.DType, shape []int64) (string, error) {
	ins, err := g.Inputs()
	if err != nil {
		return "", fmt.Errorf("export: %w", err)
	}
	var rewrite []string
	for _, v := range ins {
		if v.Name() != name {
			continue
		}
		dt, dims, _, ok, err := v.TensorType()
		if err != nil {
			return "", fmt.Errorf("export: graph input %q: %w", name, err)
		}
		if !ok && v.Has(onnxwire.ValueInfoType) {
			return "", fmt.Errorf("export: graph input %q is not declared a tensor, but it is a %v %v initializer", name, dtype, shape)
		}
		if ok && (dt != dtype || dims != nil && !compatible(dims, shape)) {
			return "", fmt.Errorf("export: graph input %q is declared %v %v, but its initializer is %v %v", name, dt, dims, dtype, shape)
		}
		switch {
		case !ok:
			rewrite = append(rewrite, "without a type")
		case dims == nil:
			rewrite = append(rewrite, fmt.Sprintf("%v without a shape", dt))
		case !slices.Equal(dims, shape):
			rewrite = append(rewrite, fmt.Sprintf("%v %v", dt, dims))
		}
	}
	if len(rewrite) == 0 {
		return "", nil
	}
	g.ReplaceInput(onnxwire.NewTensorValueInfo(name, dtype, shape, nil))
	return fmt.Sprintf("graph input %s was declared %s; now %v %v, the shape of its initializer", name, strings.Join(rewrite, ", "), dtype, shape), nil
}

// compatible reports whether declared dims (-1 for a symbolic or unknown
// dimension) can describe shape.
func compatible(declared, shape []int64) bool {
	if len(declared) != len(shape) {
		return false
	}
	for i, d := range declared {
		if d >= 0 && d != shape[i] {
			return false
		}
	}
	return true
}

// foldTransposes removes the Transposes on c's paths and rewires their
// readers; value_info of every value whose shape changed is dropped.
func foldTransposes(ix *graphIndex, c *candidate) error {
	g := ix.g
	repl := map[string]string{c.source: c.name}
	removed := map[*onnxwire.Node]bool{}
	stale := map[string]bool{c.source: true}
	// chains are source-first, so a Transpose's input is resolved before it
	for _, p := range c.paths {
		for _, n := range p.chain {
			out := n.Outputs()[0]
			stale[out] = true
			if n.OpType() != "Transpose" {
				continue
			}
			in := n.Inputs()[0]
			if r, ok := repl[in]; ok {
				in = r
			}
			repl[out] = in
			removed[n] = true
		}
	}
	for n := range removed {
		g.RemoveNode(n)
	}
	fix := func(n *onnxwire.Node, k int) error {
		in := n.Inputs()[k]
		if r, ok := repl[in]; ok {
			return n.SetInput(k, r)
		}
		return nil
	}
	for _, p := range c.paths {
		for _, n := range p.chain {
			if !removed[n] {
				if err := fix(n, 0); err != nil {
					return err
				}
			}
		}
		if err := fix(p.consumer, p.idx); err != nil {
			return err
		}
	}
	g.RemoveValueInfos(stale)
	g.RemoveInputs(map[string]bool{c.source: true})
	delete(ix.inputs, c.source)
	return nil
}
