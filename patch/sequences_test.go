package patch

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/testutil"
)

// TestTenThousandSequences: 10 000 random sequences of Set / Apply / Revert
// / switch / fuse with random α over adapters with overlapping indices, with
// an invalid configuration injected at random points (a bad tensor behind
// valid ones). Every refused step must leave the weights bit-identical, and
// every sequence ends, after Revert, bit-identical to a fresh base.
//
// A second Patcher runs every step on a copy of the weights through the
// two-pass path (revert everything, then apply; onePass = false); after
// every step both copies must be byte-identical, NaN payloads included
// (both paths do the same arithmetic). Chunk and switch-step sizes are
// drawn per model, down to 1 entry, so the one-pass switch's chunk and
// step boundaries fall everywhere.
func TestTenThousandSequences(t *testing.T) {
	const sequences = 10000
	// set per model below; restored when the test ends
	testutil.Replace(t, &chunkEntries, chunkEntries)
	testutil.Replace(t, &serialWork, serialWork)
	testutil.Replace(t, &switchBlock, switchBlock)
	testutil.Replace(t, &onePass, true)
	checked, refused := 0, 0
	rng := rand.New(rand.NewPCG(2026, 11))
	var f, f2 *fixture
	var pool []*adapter.Adapter
	var bad *adapter.Adapter
	var p, p2 *Patcher
	// two runs set on p (one-pass) and on p2 (two-pass)
	two := func(set func(*Patcher) error) (error, error) {
		onePass = true
		err := set(p)
		onePass = false
		err2 := set(p2)
		onePass = true
		return err, err2
	}
	for seq := range sequences {
		if seq%250 == 0 { // a new model and adapter pool every 250 sequences
			var specs []Weight
			for i := range 1 + rng.IntN(4) {
				specs = append(specs, Weight{Name: fmt.Sprint("w", i), DType: floatTypes[rng.IntN(3)],
					Shape: []int64{int64(1 + rng.IntN(12)), int64(1 + rng.IntN(12))}})
			}
			f = newFixture(rng, specs...)
			pool = pool[:0]
			for range 5 {
				a := &adapter.Adapter{Semantics: adapter.Semantics(rng.IntN(2)), DefaultAlpha: 1}
				for _, w := range specs {
					if rng.IntN(4) > 0 {
						a.Tensors = append(a.Tensors, randomTensor(w.Name, w.DType, floatTypes[rng.IntN(3)], w.Shape, 0.1+rng.Float64()*0.5, rng))
					}
				}
				pool = append(pool, a)
			}
			// bad: valid tensors, then one whose last index is out of range
			bad = &adapter.Adapter{Semantics: adapter.Delta, DefaultAlpha: 1}
			for _, w := range specs {
				bad.Tensors = append(bad.Tensors, randomTensor(w.Name, w.DType, w.DType, w.Shape, 0.5, rng))
			}
			last := &bad.Tensors[len(bad.Tensors)-1]
			if len(last.Indices) == 0 {
				last.Indices, last.Values = []uint32{0}, make([]byte, last.ValueDType.Size())
			}
			n := last.NumElements()
			last.Indices[len(last.Indices)-1] = uint32(n) + uint32(rng.IntN(3))
			f2 = f.clone()
			workers := 1 + rng.IntN(3)
			var err error
			if p, err = New(f.weights, WithWorkers(workers)); err != nil {
				t.Fatal(err)
			}
			if p2, err = New(f2.weights, WithWorkers(workers)); err != nil {
				t.Fatal(err)
			}
			chunkEntries = []int{1, 2, 3, 5, 1 << 15}[rng.IntN(5)]
			switchBlock = []int{1, 2, 3, 7, 2048}[rng.IntN(5)]
			serialWork = []int{0, 1 << 14}[rng.IntN(2)]
		}
		alphas := []float32{1, 1, 0.5, -1, 2.5, 0.25}
		randCfg := func() Config { return Config{pool[rng.IntN(len(pool))], alphas[rng.IntN(len(alphas))]} }
		var active []Config
		for range 1 + rng.IntN(8) {
			switch rng.IntN(5) {
			case 0, 1: // Set: switch to a new configuration (fusion when > 1)
				var cfgs []Config
				for range rng.IntN(4) {
					cfgs = append(cfgs, randCfg())
				}
				if err, err2 := two(func(p *Patcher) error { return p.Set(cfgs...) }); err != nil || err2 != nil {
					t.Fatal(err, err2)
				}
				active = cfgs
			case 2: // Apply: fuse one more
				c := randCfg()
				if err, err2 := two(func(p *Patcher) error { return p.Apply(c) }); err != nil || err2 != nil {
					t.Fatal(err, err2)
				}
				active = append(active, c)
			case 3:
				if err, err2 := two(func(p *Patcher) error { p.Revert(); return nil }); err != nil || err2 != nil {
					t.Fatal(err, err2)
				}
				active = nil
			case 4: // a refused configuration changes nothing
				before := f.snapshot()
				cfgs := append(append([]Config{}, active...), Config{bad, 1})
				if rng.IntN(2) == 0 {
					cfgs = []Config{randCfg(), {bad, 0.5}}
				}
				if err, err2 := two(func(p *Patcher) error { return p.Set(cfgs...) }); err == nil || err2 == nil {
					t.Fatalf("sequence %d: an out-of-range index was accepted", seq)
				}
				if err, err2 := two(func(p *Patcher) error { return p.Apply(Config{bad, 1}) }); err == nil || err2 == nil {
					t.Fatalf("sequence %d: Apply accepted an out-of-range index", seq)
				}
				f.checkSnapshot(t, fmt.Sprintf("sequence %d: refused step", seq), before)
				refused++
			}
			f.checkSame(t, fmt.Sprintf("sequence %d: one-pass vs two-pass", seq), f2)
			if seq%100 == 0 { // the dense reference is slow; check a sample of steps
				f.checkRef(t, fmt.Sprintf("sequence %d", seq), active)
			}
		}
		if err, err2 := two(func(p *Patcher) error { p.Revert(); return nil }); err != nil || err2 != nil {
			t.Fatal(err, err2)
		}
		f.checkBase(t, fmt.Sprintf("sequence %d final revert", seq))
		f2.checkBase(t, fmt.Sprintf("sequence %d final revert (two-pass)", seq))
		checked++
	}
	t.Logf("%d sequences ended bit-identical to base; %d refused configurations changed nothing", checked, refused)
}
