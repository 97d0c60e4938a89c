package onnxwire

import (
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/tensor"
	"google.golang.org/protobuf/encoding/protowire"
)

// nestedMessage returns a message whose field 1 holds a message whose
// field 1 holds ..., depth levels below the top.
func nestedMessage(depth int) []byte {
	var b []byte
	for range depth {
		b = protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), b)
	}
	return b
}

// TestDepthLimitMatchesProtobuf: a message nested MaxDepth (100) levels
// below the top is read, one more level is refused, as protobuf's default
// recursion limit (which ONNX Runtime keeps) does.
func TestDepthLimitMatchesProtobuf(t *testing.T) {
	for _, depth := range []int{MaxDepth, MaxDepth + 1} {
		m, err := Parse(nestedMessage(depth))
		for level := 1; err == nil && level <= depth; level++ {
			f := m.Get(1)
			if f == nil {
				t.Fatalf("depth %d: no field at level %d", depth, level)
			}
			m, err = f.Message()
		}
		switch {
		case depth <= MaxDepth && err != nil:
			t.Errorf("depth %d refused: %v", depth, err)
		case depth > MaxDepth && (!errors.Is(err, ErrTooDeep) || !errors.Is(err, ErrMalformed)):
			t.Errorf("depth %d: %v, want ErrTooDeep (and ErrMalformed)", depth, err)
		}
	}
}

// nestedIfModel is a model whose main graph holds levels If nodes nested
// in each other's then_branch; the innermost graph MatMuls the main
// graph's x and W.
func nestedIfModel(levels int) []byte {
	inner := NewBuilder()
	inner.AddNode("mm", "MatMul", []string{"x", "W"}, []string{"y_inner"})
	inner.AddOutput("y_inner", tensor.Float32, []int64{2, 2})
	b := NewBuilder()
	b.AddInput("x", tensor.Float32, []int64{2, 2})
	b.AddInput("c", tensor.Bool, nil)
	b.AddInitializer(NewTensor("W", tensor.Float32, []int64{2, 2}, f32bytes(1, 2, 3, 4)))
	b.AddNodeProto(NestedIf(levels, "c", "y", inner.Graph()))
	b.AddOutput("y", tensor.Float32, []int64{2, 2})
	return b.Bytes()
}

// TestNestedSubgraphDepthLimit: walking subgraphs nested deeper than
// protobuf (and ONNX Runtime) allow ends in ErrTooDeep, quickly and
// without allocating for the levels it does not reach; a model nested
// as deep as allowed is walked completely.
func TestNestedSubgraphDepthLimit(t *testing.T) {
	// 32 If levels put the innermost graph at depth 97: allowed
	m, err := ParseModel(nestedIfModel(32), "")
	if err != nil {
		t.Fatal(err)
	}
	g, _ := m.Graph()
	refs, err := g.SubgraphReferences()
	if err != nil || !refs["W"] || !refs["x"] {
		t.Fatalf("32 levels: refs %v, %v", refs, err)
	}
	for _, levels := range []int{34, 200, 100_000} {
		raw := nestedIfModel(levels)
		start := time.Now()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		m, err := ParseModel(raw, "")
		if err != nil {
			t.Fatal(err)
		}
		g, _ := m.Graph()
		_, err = g.SubgraphReferences()
		werr := m.WalkTensors(func(*Tensor) error { return nil })
		runtime.ReadMemStats(&after)
		for what, err := range map[string]error{"SubgraphReferences": err, "WalkTensors": werr} {
			if !errors.Is(err, ErrTooDeep) {
				t.Errorf("%d levels: %s = %v, want ErrTooDeep", levels, what, err)
			} else if len(err.Error()) > 300 {
				t.Errorf("%d levels: %s: a %d-byte message", levels, what, len(err.Error()))
			}
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
			t.Errorf("%d levels (%d bytes): refusing allocated %d bytes", levels, len(raw), alloc)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%d levels: refusing took %v", levels, d)
		}
	}
}
