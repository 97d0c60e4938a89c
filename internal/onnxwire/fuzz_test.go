//go:build unix

package onnxwire

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/internal/onnxwire/onnxwiretest"
)

// FuzzParseModel parses arbitrary bytes as a ModelProto and walks
// everything a reader of this package can reach: opsets, the graph, nodes,
// attributes (ints, floats, tensors, subgraphs, at every depth Parse
// allows), initializers and their data (inline and external, resolved
// against the links, FIFO and socket of onnxwiretest.UntrustedDir), value infos,
// WalkTensors and SubgraphReferences. Every input must give a result or an
// error: no panic, no hang, no allocation beyond what the input holds, no
// bytes of the file outside the directory (Secret) unless the input holds
// them. An untouched model must encode back to its input byte for byte.
func FuzzParseModel(f *testing.F) {
	f.Add(NewBuilder().AddInput("x", 1, []int64{-1, 4}, "batch").Bytes())
	paths, _ := filepath.Glob(filepath.Join("..", "..", "models", "testdata", "*", "model.onnx"))
	for _, p := range append(paths, filepath.Join("..", "..", "models", "tiny", "model.onnx")) {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	dir := onnxwiretest.UntrustedDir(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		// a hang is a bug like a crash
		tm := time.AfterFunc(10*time.Second, func() { panic("fuzz input took longer than 10s") })
		defer tm.Stop()
		m, err := ParseModel(data, dir)
		if err != nil {
			return
		}
		if !bytes.Equal(m.Encode(), data) {
			t.Fatal("parse + encode changed the bytes")
		}
		v := &visitor{t: t, dir: dir, secretOK: bytes.Contains(data, onnxwiretest.Secret[:8])}
		m.IRVersion()
		m.Opsets()
		m.WalkTensors(func(tp *Tensor) error {
			v.tensor(tp)
			return nil
		})
		g, err := m.Graph()
		if err != nil {
			return
		}
		v.graph(g)
		if m.Modified() {
			t.Fatal("reading marked the model modified")
		}
		if !bytes.Equal(m.Encode(), data) {
			t.Fatal("reading changed the encoding")
		}
	})
}

// visitor reads everything of a fuzzed model.
type visitor struct {
	t        *testing.T
	dir      string
	secretOK bool // the input holds secret's pattern itself
}

func (v *visitor) tensor(tp *Tensor) {
	tp.Name()
	tp.DType()
	tp.Dims()
	tp.NumBytes()
	tp.External()
	if b, err := tp.Data(v.dir); err == nil && !v.secretOK && bytes.Contains(b, onnxwiretest.Secret[:8]) {
		v.t.Fatalf("tensor %q read the file outside the model directory", tp.Name())
	}
	if r, _, closeFn, err := tp.Open(v.dir); err == nil {
		var buf [64]byte
		r.Read(buf[:])
		closeFn()
	}
}

// graph visits g and its subgraphs, as deep as Parse allows.
func (v *visitor) graph(g *Graph) {
	g.Name()
	g.SubgraphReferences()
	if inits, err := g.Initializers(); err == nil {
		for _, t := range inits {
			v.tensor(t)
		}
	}
	for _, list := range []func() ([]*ValueInfo, error){g.Inputs, g.Outputs, g.ValueInfos} {
		vis, _ := list()
		for _, vi := range vis {
			vi.Name()
			vi.TensorType()
		}
	}
	nodes, _ := g.Nodes()
	for _, n := range nodes {
		n.Name()
		n.OpType()
		n.IsONNX()
		n.Inputs()
		n.Outputs()
		n.AttrInt("axis", 0)
		attrs, _ := n.Attributes()
		for _, a := range attrs {
			a.Name()
			a.Type()
			a.Int()
			a.Ints()
			a.Float()
			a.Str()
			if t, err := a.Tensor(); err == nil && t != nil {
				v.tensor(t)
			}
			subs, _ := a.Subgraphs()
			for _, sg := range subs {
				v.graph(sg)
			}
		}
	}
}
