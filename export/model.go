package export

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// ErrClosed is returned by the methods of a Model after Close.
var ErrClosed = errors.New("export: model is closed")

// ErrEscapesModelDir is wrapped by the errors about a file that a model
// names relative to its directory (external data of a source model, the
// files of an exported directory) but that lies outside that directory:
// an absolute location, one through "..", or one that leaves the
// directory once symbolic links are followed. Symbolic links that stay
// inside the directory are followed. ONNX Runtime refuses such models too
// ("escapes model directory").
var ErrEscapesModelDir = onnxwire.ErrEscapesModelDir

// ErrNotRegularFile is wrapped by the errors about a file that a model
// names (see ErrEscapesModelDir) but that is a directory, FIFO, socket or
// device: such files are refused without being read.
var ErrNotRegularFile = onnxwire.ErrNotRegularFile

// Model is an exported model directory (written by Expose) opened for
// reading, the way archive/zip hands out a reader: Open reads and validates
// manifest.json and model.onnx once, and keeps the weight file open, so
// every later use (fusing adapters, writing a standalone model, opening an
// ORT session with package ort) works from the same snapshot of the
// directory. A weight file replaced on disk by a rename after Open does not
// change what the Model reads.
//
// A Model is safe for concurrent use. Close it when done; the values it
// returned stay valid.
type Model struct {
	dir      string
	manifest *Manifest
	graph    []byte // model.onnx as read at Open
	inputs   []ValueInfo
	outputs  []ValueInfo

	mu     sync.RWMutex // Close holds it exclusively
	wf     *os.File     // the weight file; nil after Close
	wfSize int64
}

// ValueInfo describes a model input or output as the graph declares it.
// Shape has -1 for every dimension that is not a fixed size; SymbolicDims
// holds each dimension's symbolic name ("" when none).
type ValueInfo struct {
	Name         string       `json:"name"`
	DType        tensor.DType `json:"dtype"`
	Shape        []int64      `json:"shape"`
	SymbolicDims []string     `json:"symbolic_dims,omitempty"`
}

// Open opens the exported model directory dir: it reads and validates
// manifest.json, checks that every tensor it lists lies inside the weight
// file, and reads the graph's inputs and outputs from model.onnx. Every
// error about the directory's content wraps ErrManifest (and, for a file
// that cannot be read, the file system's error, e.g. fs.ErrNotExist). The
// directory's files are read like external data (onnxwire.OpenInDir): a
// file that is not a regular file inside dir once symbolic links are
// followed is refused (ErrNotRegularFile, ErrEscapesModelDir).
func Open(dir string) (_ *Model, err error) {
	b, err := readInDir(dir, ManifestFile)
	if err != nil {
		if fi, serr := os.Stat(dir); serr == nil && !fi.IsDir() {
			return nil, fmt.Errorf("%w: %s is a file, not an exported model directory (shira-ort export / export.Expose writes one)", ErrManifest, dir)
		}
		return nil, err
	}
	m, err := parseManifest(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ManifestFile), err)
	}
	// the files the manifest names: failing to read them makes the
	// directory unusable, so the errors wrap ErrManifest too
	graph, err := readInDir(dir, m.Model)
	if err != nil {
		return nil, err
	}
	ins, outs, err := graphIO(graph, dir, m)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrManifest, filepath.Join(dir, m.Model), err)
	}
	wf, err := onnxwire.OpenInDir(dir, m.WeightsFile)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrManifest, dir, err)
	}
	defer func() {
		if err != nil {
			wf.Close()
		}
	}()
	st, err := wf.Stat() // a regular file: OpenInDir checked
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	size := st.Size()
	for _, e := range m.Tensors {
		if e.Offset > size || e.Length > size-e.Offset {
			return nil, fmt.Errorf("%w: weight %q at %d+%d is beyond the end of %s (%d bytes)", ErrManifest, e.Name, e.Offset, e.Length, wf.Name(), size)
		}
	}
	for _, e := range m.External {
		if e.Offset > size || e.Length > size-e.Offset {
			return nil, fmt.Errorf("%w: external tensor %q at %d+%d is beyond the end of %s (%d bytes)", ErrManifest, e.Name, e.Offset, e.Length, wf.Name(), size)
		}
	}
	return &Model{dir: dir, manifest: m, graph: graph, inputs: ins, outputs: outs, wf: wf, wfSize: size}, nil
}

// readInDir reads the file name of the exported directory dir
// (onnxwire.OpenInDir: a regular file inside dir); errors wrap
// ErrManifest.
func readInDir(dir, name string) ([]byte, error) {
	f, err := onnxwire.OpenInDir(dir, name)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrManifest, dir, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrManifest, err)
	}
	b := make([]byte, fi.Size()) // a regular file: OpenInDir checked
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrManifest, f.Name(), err)
	}
	return b, nil
}

// parseManifest decodes and validates manifest.json.
func parseManifest(b []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrManifest, err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// checkIO checks that the type of every graph input and output can be read
// (Open reads them).
func checkIO(g *onnxwire.Graph) error {
	for _, list := range []func() ([]*onnxwire.ValueInfo, error){g.Inputs, g.Outputs} {
		vs, err := list()
		if err != nil {
			return err
		}
		for _, v := range vs {
			if _, _, _, _, err := v.TensorType(); err != nil {
				return fmt.Errorf("value %q: %w", v.Name(), err)
			}
		}
	}
	return nil
}

// graphIO reads the model's inputs (exposed weights and other
// initializers excluded) and outputs.
func graphIO(graph []byte, dir string, m *Manifest) (ins, outs []ValueInfo, err error) {
	model, err := onnxwire.ParseModel(graph, dir)
	if err != nil {
		return nil, nil, err
	}
	g, err := model.Graph()
	if err != nil {
		return nil, nil, err
	}
	inits, err := g.Initializers()
	if err != nil {
		return nil, nil, err
	}
	isInit := map[string]bool{}
	for _, t := range inits {
		isInit[t.Name()] = true
	}
	for _, e := range m.Tensors {
		isInit[e.Name] = true
	}
	convert := func(vs []*onnxwire.ValueInfo, skip map[string]bool) ([]ValueInfo, error) {
		var out []ValueInfo
		for _, v := range vs {
			if skip[v.Name()] {
				continue
			}
			vi := ValueInfo{Name: v.Name()}
			dt, dims, params, ok, err := v.TensorType()
			if err != nil {
				return nil, fmt.Errorf("value %q: %w", v.Name(), err)
			}
			if ok {
				vi.DType, vi.Shape, vi.SymbolicDims = dt, dims, params
			}
			out = append(out, vi)
		}
		return out, nil
	}
	gi, err := g.Inputs()
	if err != nil {
		return nil, nil, err
	}
	if ins, err = convert(gi, isInit); err != nil {
		return nil, nil, err
	}
	gout, err := g.Outputs()
	if err != nil {
		return nil, nil, err
	}
	if outs, err = convert(gout, nil); err != nil {
		return nil, nil, err
	}
	return ins, outs, nil
}

// Close closes the weight file. Later calls that read weights return
// ErrClosed; Close is idempotent.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.wf == nil {
		return nil
	}
	err := m.wf.Close()
	m.wf = nil
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

// Dir returns the directory the model was opened from.
func (m *Model) Dir() string { return m.dir }

// Manifest returns the model's manifest. It is shared, not copied: do not
// modify it.
func (m *Model) Manifest() *Manifest { return m.manifest }

// Fingerprint returns the model fingerprint adapters are checked against
// (Manifest.Fingerprint).
func (m *Model) Fingerprint() string { return m.manifest.Fingerprint }

// Inputs returns the inputs a Run of the model needs, in graph order
// (exposed weights and other initializers are not listed).
func (m *Model) Inputs() []ValueInfo { return cloneValueInfos(m.inputs) }

// Outputs returns the model's outputs in graph order.
func (m *Model) Outputs() []ValueInfo { return cloneValueInfos(m.outputs) }

func cloneValueInfos(in []ValueInfo) []ValueInfo {
	out := make([]ValueInfo, len(in))
	for i, v := range in {
		out[i] = ValueInfo{Name: v.Name, DType: v.DType, Shape: slices.Clone(v.Shape), SymbolicDims: slices.Clone(v.SymbolicDims)}
	}
	return out
}

// Graph returns model.onnx as read at Open (the exposed weights are graph
// inputs there, their bytes external in the weight file).
func (m *Model) Graph() []byte { return m.graph }

// WithWeightFile calls fn with the open weight file and its size at Open,
// holding off Close until fn returns. fn must not close the file or keep
// it (a memory mapping made from it may outlive the call).
func (m *Model) WithWeightFile(fn func(f *os.File, size int64) error) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.wf == nil {
		return ErrClosed
	}
	return fn(m.wf, m.wfSize)
}

// ReadWeight reads the exposed weight name from the weight file into a new
// slice, checking it against the manifest's sha256.
func (m *Model) ReadWeight(name string) ([]byte, error) {
	e := m.manifest.Entry(name)
	if e == nil {
		return nil, fmt.Errorf("export: no exposed weight named %q", name)
	}
	var out []byte
	err := m.WithWeightFile(func(f *os.File, _ int64) error {
		var err error
		out, err = readEntry(f, e)
		return err
	})
	return out, err
}

// ReadWeights reads every exposed weight into memory (by name), checking
// each against the manifest's sha256.
func (m *Model) ReadWeights(ctx context.Context) (map[string][]byte, error) {
	out := make(map[string][]byte, len(m.manifest.Tensors))
	err := m.WithWeightFile(func(f *os.File, _ int64) error {
		for i := range m.manifest.Tensors {
			if err := ctx.Err(); err != nil {
				return err
			}
			e := &m.manifest.Tensors[i]
			b, err := readEntry(f, e)
			if err != nil {
				return err
			}
			out[e.Name] = b
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// PatchWeights returns the exposed weights as patch.Weight values over the
// buffers in data (one per exposed weight, by name, of the weight's byte
// length), in manifest order, each with its name, dtype, shape and base
// sha256: what patch.New and patch.FuseInto work on.
func (m *Model) PatchWeights(data map[string][]byte) ([]patch.Weight, error) {
	ws := make([]patch.Weight, 0, len(m.manifest.Tensors))
	for i := range m.manifest.Tensors {
		e := &m.manifest.Tensors[i]
		b, ok := data[e.Name]
		if !ok {
			return nil, fmt.Errorf("export: no data for exposed weight %q", e.Name)
		}
		if int64(len(b)) != e.Length {
			return nil, fmt.Errorf("export: weight %q has %d bytes, want %d (%v %v)", e.Name, len(b), e.Length, e.DType, e.Shape)
		}
		sum, _ := e.Sum()    // validated with the manifest
		q, err := e.Scheme() // nil for a float weight; validated with the manifest
		if err != nil {
			return nil, err
		}
		ws = append(ws, patch.Weight{Name: e.Name, DType: e.DType, Shape: slices.Clone(e.LogicalShape()), Data: b, BaseSHA256: sum, Quant: q})
	}
	return ws, nil
}

// Fuse reads the exposed weights and fuses cfgs into them (ReadWeights,
// then FuseInto), returning the fused bytes of every exposed weight by
// name.
func (m *Model) Fuse(ctx context.Context, cfgs []patch.Config, opts ...patch.Option) (map[string][]byte, error) {
	data, err := m.ReadWeights(ctx)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := m.FuseInto(data, cfgs, opts...); err != nil {
		return nil, err
	}
	return data, nil
}

// FuseInto applies cfgs to data, the bytes of every exposed weight by name
// (from ReadWeights), in place: offline fusion, the same code a live
// session runs (patch.FuseInto), so a session on the fused weights computes
// exactly what a live session with cfgs active computes. Adapters made for
// another model fingerprint or other base weights are refused unless opts
// say otherwise (patch.WithoutFingerprintCheck). On error data is
// unchanged.
func (m *Model) FuseInto(data map[string][]byte, cfgs []patch.Config, opts ...patch.Option) error {
	ws, err := m.PatchWeights(data)
	if err != nil {
		return err
	}
	all := append([]patch.Option{patch.WithModelFingerprint(m.manifest.Fingerprint)}, opts...)
	return patch.FuseInto(ws, cfgs, all...)
}

// FileTensor is an initializer of the model whose bytes are in the weight
// file (ConstantGraph).
type FileTensor struct {
	Name   string
	DType  tensor.DType
	Shape  []int64
	Offset int64
	Length int64
	// Exposed says the tensor is an exposed (patchable) weight.
	Exposed bool
}

// ConstantGraph returns model.onnx with the exposed weights turned back
// into plain constant initializers (their graph-input entries removed), so
// that ORT may fold, transform and prepack them, and lists every
// initializer whose bytes are in the weight file, exposed or not: a caller
// supplies those bytes from memory (OrtApi::AddExternalInitializers), so
// the weight file need not be read again. Other external data, if any,
// keeps its location relative to Dir.
func (m *Model) ConstantGraph() ([]byte, []FileTensor, error) {
	model, err := onnxwire.ParseModel(m.graph, m.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("export: %w", err)
	}
	g, err := model.Graph()
	if err != nil {
		return nil, nil, fmt.Errorf("export: %w", err)
	}
	exposed := map[string]bool{}
	for _, e := range m.manifest.Tensors {
		exposed[e.Name] = true
	}
	if n := g.RemoveInputs(exposed); n != len(exposed) {
		return nil, nil, fmt.Errorf("%w: only %d of %d exposed weights are overridable initializers (initializers and graph inputs) of %s; ORT could fold or prepack the others, so patches would be lost", ErrManifest, n, len(exposed), m.manifest.Model)
	}
	inits, err := g.Initializers()
	if err != nil {
		return nil, nil, fmt.Errorf("export: %w", err)
	}
	var out []FileTensor
	found := map[string]bool{}
	for _, t := range inits {
		if !t.IsExternal() {
			continue
		}
		name := t.Name()
		if e := m.manifest.Entry(name); e != nil {
			out = append(out, FileTensor{Name: name, DType: e.DType, Shape: slices.Clone(e.Shape), Offset: e.Offset, Length: e.Length, Exposed: true})
			found[name] = true
			continue
		}
		ext, _, err := t.External()
		if err != nil {
			return nil, nil, fmt.Errorf("export: initializer %s: %w", name, err)
		}
		if filepath.Clean(ext.Location) != m.manifest.WeightsFile {
			continue // read by ORT from its own file
		}
		dims, err := t.Dims()
		if err != nil {
			return nil, nil, fmt.Errorf("export: initializer %s: %w", name, err)
		}
		size, err := t.NumBytes()
		if err != nil {
			return nil, nil, fmt.Errorf("export: initializer %s: %w", name, err)
		}
		if ext.Offset < 0 || ext.Offset > m.wfSize || size > m.wfSize-ext.Offset {
			return nil, nil, fmt.Errorf("%w: initializer %s lies outside %s", ErrManifest, name, m.manifest.WeightsFile)
		}
		out = append(out, FileTensor{Name: name, DType: t.DType(), Shape: dims, Offset: ext.Offset, Length: size})
	}
	for name := range exposed {
		if !found[name] {
			return nil, nil, fmt.Errorf("%w: exposed weight %s is not an external initializer of %s", ErrManifest, name, m.manifest.Model)
		}
	}
	return model.Encode(), out, nil
}
