package peft_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/internal/pefttest"
	"github.com/shira-ort/shira-ort/peft"
	"github.com/shira-ort/shira-ort/tensor"
)

// sharedWeight describes a graph where the [4, 3] weight called Weight is
// read by an embedding Gather (which keeps export from folding any
// Transpose after it), through a Transpose (node Transpose, attribute
// Perm; nil: none) by the MatMul node Linear, and, when Direct is set,
// directly as the B of a second MatMul called Direct[0].
type sharedWeight struct {
	Weight, Transpose, Linear string
	Perm                      []int64
	Direct                    []string
}

func (s sharedWeight) export(t *testing.T) *export.Model {
	t.Helper()
	in := int64(4) // the MatMul's input features when the Transpose swaps
	var attrs []*onnxwire.Attribute
	if s.Perm != nil {
		attrs = append(attrs, onnxwire.IntsAttr("perm", s.Perm...))
		if s.Perm[0] == 0 {
			in = 3
		}
	}
	b := onnxwire.NewBuilder()
	b.AddInitializer(onnxwire.NewTensor(s.Weight, tensor.Float32, []int64{4, 3}, make([]byte, 4*12)))
	b.AddInput("ids", tensor.Int64, []int64{2})
	b.AddInput("x", tensor.Float32, []int64{2, in})
	b.AddNode("/embed/Gather", "Gather", []string{s.Weight, "ids"}, []string{"emb"})
	b.AddNode(s.Transpose, "Transpose", []string{s.Weight}, []string{"wt"}, attrs...)
	b.AddNode(s.Linear, "MatMul", []string{"x", "wt"}, []string{"logits"})
	b.AddOutput("emb", tensor.Float32, []int64{2, 3})
	b.AddOutput("logits", tensor.Float32, []int64{2, -1})
	if s.Direct != nil {
		b.AddInput("x2", tensor.Float32, []int64{2, 4})
		b.AddNode(s.Direct[0], "MatMul", []string{"x2", s.Weight}, []string{"y2"})
		b.AddOutput("y2", tensor.Float32, []int64{2, 3})
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "model.onnx")
	if err := b.WriteFile(src); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "exported")
	if _, err := export.Expose(t.Context(), src, out, export.Options{}); err != nil {
		t.Fatal(err)
	}
	m, err := export.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if c := m.Manifest().Tensors[0].Consumers[0]; len(c.Via) != 1 || c.Via[0].OpType != "Transpose" {
		t.Fatalf("consumer %+v, want one read through the unfolded Transpose", c)
	}
	return m
}

// The layout of a module read through an unfolded Transpose is its
// consumer's composed with the Transpose's permutation, read from the
// graph: perm [1, 0] (or none) swaps the axes, [0, 1] does not.
func TestResolveThroughTranspose(t *testing.T) {
	for _, tc := range []struct {
		perm    []int64
		layout  peft.Layout
		out, in int
	}{
		{nil, peft.OutIn, 4, 3},
		{[]int64{1, 0}, peft.OutIn, 4, 3},
		{[]int64{0, 1}, peft.InOut, 3, 4},
	} {
		m := sharedWeight{Weight: "embed.weight", Transpose: "/lm_head/Transpose", Linear: "/lm_head/MatMul", Perm: tc.perm}.export(t)
		tg, err := peft.NewMapper(m).Resolve("base_model.model.lm_head")
		if err != nil {
			t.Fatalf("perm %v: %v", tc.perm, err)
		}
		if tg.Entry.Name != "embed.weight" || tg.Layout != tc.layout || tg.Out != tc.out || tg.In != tc.in {
			t.Errorf("perm %v: %s %v out=%d in=%d, want embed.weight %v out=%d in=%d", tc.perm, tg.Entry.Name, tg.Layout, tg.Out, tg.In, tc.layout, tc.out, tc.in)
		}
	}
}

// A weight read by two linear layers in different orientations (directly,
// and through a Transpose): the consumer named after the module decides;
// when no consumer is (the module matches the tensor's own name), Resolve
// refuses and says why.
func TestResolveDisagreeingConsumers(t *testing.T) {
	m := sharedWeight{Weight: "w", Transpose: "/lm_head/Transpose", Linear: "/lm_head/MatMul", Direct: []string{"/enc/MatMul"}}.export(t)
	mp := peft.NewMapper(m)
	for module, want := range map[string]peft.Layout{"lm_head": peft.OutIn, "enc": peft.InOut} {
		tg, err := mp.Resolve(module)
		if err != nil {
			t.Fatalf("%s: %v", module, err)
		}
		if tg.Layout != want {
			t.Errorf("%s: layout %v, want %v", module, tg.Layout, want)
		}
	}

	m = sharedWeight{Weight: "head.weight", Direct: []string{""}}.export(t)
	_, err := peft.NewMapper(m).Resolve("head")
	if !errors.Is(err, peft.ErrLayout) || !strings.Contains(err.Error(), "cannot be told") {
		t.Fatalf("err = %v, want ErrLayout saying why", err)
	}
	t.Log(err)
}

// TestLongModuleName: a 4 MB module name (from an untrusted checkpoint)
// is refused fast, with a short message.
func TestLongModuleName(t *testing.T) {
	mp := peft.NewMapper(pefttest.Open(t, "base"))
	start := time.Now()
	_, err := mp.Resolve(strings.Repeat("layers.", 600_000))
	if !errors.Is(err, peft.ErrNoMatch) {
		t.Fatalf("Resolve = %v, want ErrNoMatch", err)
	}
	if len(err.Error()) > 2048 {
		t.Fatalf("the error is %d bytes long", len(err.Error()))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Resolve took %v", d)
	}
}
