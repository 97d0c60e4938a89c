package patch

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/tensor"
)

// newNonFinite reports whether data (dtype dt) has a non-finite element
// where base has a finite one.
func newNonFinite(dt tensor.DType, base, data []byte) bool {
	n := len(base) / dt.Size()
	for i := range n {
		if b, d := widen(dt, base, i), widen(dt, data, i); finite(b) && !finite(d) {
			return true
		}
	}
	return false
}

// TestFiniteCheck compares WithFiniteCheck against the unchecked patcher on
// random configurations (values with NaN and infinities, alphas up to
// 3e38, fusions, every dtype): it refuses exactly the configurations that
// make a finite entry non-finite, and a refused one writes nothing.
func TestFiniteCheck(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	shape := []int64{24, 40}
	refused, accepted := 0, 0
	for round := range 300 {
		dt := floatTypes[round%3]
		f := newFixture(rng, Weight{Name: "w", DType: dt, Shape: shape})
		g := f.clone()
		unchecked, err := New(f.weights)
		if err != nil {
			t.Fatal(err)
		}
		checked, err := New(g.weights, WithFiniteCheck())
		if err != nil {
			t.Fatal(err)
		}
		var cfgs []Config
		for k := range 1 + rng.IntN(3) {
			at := randomTensor("w", dt, floatTypes[rng.IntN(3)], shape, 0.1, rng)
			if rng.IntN(3) > 0 {
				at = finiteValues(at)
			}
			sem := adapter.Semantics(rng.IntN(2))
			alpha := []float32{1, 0.5, -1, 3e38, 1e-3}[rng.IntN(5)]
			cfgs = append(cfgs, Config{Adapter: &adapter.Adapter{Name: fmt.Sprint("a", k), Semantics: sem, Tensors: []adapter.Tensor{at}}, Alpha: alpha})
		}
		if err := unchecked.Set(cfgs...); err != nil {
			t.Fatal(err)
		}
		bad := newNonFinite(dt, f.base[0], f.weights[0].Data)
		before := g.snapshot()
		err = checked.Set(cfgs...)
		switch {
		case bad && !errors.Is(err, ErrNonFinite):
			t.Fatalf("round %d: a configuration making finite entries non-finite was accepted (err %v)", round, err)
		case !bad && err != nil:
			t.Fatalf("round %d: a finite configuration was refused: %v", round, err)
		case bad:
			g.checkSnapshot(t, fmt.Sprint("round ", round, ": refused configuration"), before)
			refused++
		default:
			g.checkSame(t, fmt.Sprint("round ", round, ": checked vs unchecked"), f)
			accepted++
		}
	}
	if refused == 0 || accepted == 0 {
		t.Fatalf("%d refused, %d accepted: the test did not exercise both outcomes", refused, accepted)
	}
	t.Logf("%d configurations refused, %d accepted", refused, accepted)
}

// TestFiniteCheckMessage names the adapter, the index and the values.
func TestFiniteCheckMessage(t *testing.T) {
	w := Weight{Name: "w", DType: tensor.Float16, Shape: []int64{4}, Data: tensor.Bytes([]uint16{0x3c00, 0x3c00, 0x3c00, 0x3c00})}
	p, err := New([]Weight{w}, WithFiniteCheck())
	if err != nil {
		t.Fatal(err)
	}
	at, err := adapter.NewTensor("w", tensor.Float16, []int64{4}, []uint32{2}, []float32{60000}, tensor.Float32)
	if err != nil {
		t.Fatal(err)
	}
	a := &adapter.Adapter{Name: "big", Semantics: adapter.Delta, Tensors: []adapter.Tensor{at}}
	err = p.Set(Config{Adapter: a, Alpha: 2}) // 1 + 120000 overflows float16
	if !errors.Is(err, ErrNonFinite) || !strings.Contains(err.Error(), `"big"`) || !strings.Contains(err.Error(), "index 2") || !strings.Contains(err.Error(), "beyond the range of float16") {
		t.Fatalf("Set = %v", err)
	}
	if math.IsInf(float64(widen(tensor.Float16, w.Data, 2)), 0) {
		t.Fatal("a refused configuration was written")
	}
}

// TestLongTargetName: an adapter naming a 4 MB target gets a short error,
// fast (the "did you mean" hint is bounded).
func TestLongTargetName(t *testing.T) {
	w := Weight{Name: "w", DType: tensor.Float32, Shape: []int64{4}, Data: make([]byte, 16)}
	p, err := New([]Weight{w})
	if err != nil {
		t.Fatal(err)
	}
	name := strings.Repeat("x", 4<<20)
	at, err := adapter.NewTensor(name, tensor.Float32, []int64{4}, []uint32{1}, []float32{1}, tensor.Float32)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = p.Set(Default(&adapter.Adapter{Name: name, DefaultAlpha: 1, Tensors: []adapter.Tensor{at}}))
	if !errors.Is(err, ErrUnknownTarget) {
		t.Fatalf("Set = %v", err)
	}
	if len(err.Error()) > 1024 {
		t.Fatalf("the error is %d bytes long", len(err.Error()))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("refusing the unknown target took %v", d)
	}
}
