package onnxwire

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzParseModel parses arbitrary bytes as a ModelProto and walks
// everything a reader of this package can reach: opsets, the graph, nodes,
// attributes (ints, floats, tensors, subgraphs), initializers and their
// data (inline and external, resolved against an empty directory), value
// infos, WalkTensors and SubgraphReferences. Every input must give a result
// or an error: no panic, no hang, no allocation beyond what the input holds.
// An untouched model must encode back to its input byte for byte.
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
	dir := f.TempDir()
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
		m.IRVersion()
		m.Opsets()
		m.WalkTensors(func(tp *Tensor) error {
			visitTensor(tp, dir)
			return nil
		})
		g, err := m.Graph()
		if err != nil {
			return
		}
		visitGraph(g, dir, 0)
		if m.Modified() {
			t.Fatal("reading marked the model modified")
		}
		if !bytes.Equal(m.Encode(), data) {
			t.Fatal("reading changed the encoding")
		}
	})
}

func visitTensor(tp *Tensor, dir string) {
	tp.Name()
	tp.DType()
	tp.Dims()
	tp.NumBytes()
	tp.External()
	tp.Data(dir)
	if r, _, closeFn, err := tp.Open(dir); err == nil {
		var buf [64]byte
		r.Read(buf[:])
		closeFn()
	}
}

func visitGraph(g *Graph, dir string, depth int) {
	if depth > 64 {
		return
	}
	g.Name()
	g.SubgraphReferences()
	if inits, err := g.Initializers(); err == nil {
		for _, t := range inits {
			visitTensor(t, dir)
		}
	}
	for _, list := range []func() ([]*ValueInfo, error){g.Inputs, g.Outputs, g.ValueInfos} {
		vis, _ := list()
		for _, v := range vis {
			v.Name()
			v.TensorType()
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
				visitTensor(t, dir)
			}
			subs, _ := a.Subgraphs()
			for _, sg := range subs {
				visitGraph(sg, dir, depth+1)
			}
		}
	}
}
