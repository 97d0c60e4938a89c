package patch

import (
	"errors"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/tensor"
)

// TestClosedActiveAdapter closes adapters the Patcher has active (mapped
// from files) and checks that Revert, Set and Apply still work on valid
// memory, that a closed adapter cannot be made active again, and that its
// mapping is released once the Patcher lets go of it.
func TestClosedActiveAdapter(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	shape := []int64{64, 96}
	base := randomData(tensor.Float32, 64*96, rng)
	data := slices.Clone(base)
	p, err := New([]Weight{{Name: "w", DType: tensor.Float32, Shape: shape, Data: data}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	open := func(name string) *adapter.Adapter {
		a := &adapter.Adapter{Name: name, DefaultAlpha: 1, Semantics: adapter.Delta,
			Tensors: []adapter.Tensor{finiteValues(randomTensor("w", tensor.Float32, tensor.Float32, shape, 0.05, rng))}}
		path := filepath.Join(dir, name+".shira")
		if err := adapter.Write(path, a); err != nil {
			t.Fatal(err)
		}
		m, err := adapter.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	a, b := open("a"), open("b")
	if err := p.Set(Default(a)); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if a.Tensors[0].Indices == nil {
		t.Fatal("Close unmapped an adapter the Patcher has active")
	}
	// a switch away from the closed adapter reverts through its indices
	if err := p.Set(Default(b)); err != nil {
		t.Fatal(err)
	}
	if a.Tensors[0].Indices != nil {
		t.Fatal("the closed adapter stayed mapped after the Patcher let go")
	}
	if err := p.Apply(Default(a)); !errors.Is(err, adapter.ErrClosed) || !errors.Is(err, ErrConfig) {
		t.Fatalf("Apply(closed) = %v, want ErrClosed and ErrConfig", err)
	}
	if err := p.Set(Default(a)); !errors.Is(err, adapter.ErrClosed) {
		t.Fatalf("Set(closed) = %v, want ErrClosed", err)
	}
	if err := p.Validate(Default(a)); !errors.Is(err, adapter.ErrClosed) {
		t.Fatalf("Validate(closed) = %v, want ErrClosed", err)
	}
	if got := p.Active(); len(got) != 1 || got[0].Adapter != b {
		t.Fatal("a refused configuration changed the active one")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	p.Revert() // through b's indices, still mapped
	if !slices.Equal(data, base) {
		t.Fatal("revert after closing the active adapter is not bit-exact")
	}
	if b.Tensors[0].Indices != nil {
		t.Fatal("b stayed mapped after Revert")
	}
	// FuseInto lets go of what it applied
	c := open("c")
	if err := FuseInto([]Weight{{Name: "w", DType: tensor.Float32, Shape: shape, Data: slices.Clone(base)}}, []Config{Default(c)}); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if c.Tensors[0].Indices != nil {
		t.Fatal("FuseInto kept the adapter retained")
	}
}
