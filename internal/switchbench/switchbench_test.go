package switchbench

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"testing"

	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/peft"
	"github.com/shira-ort/shira-ort/tensor"
)

// TestTensorsSmoke runs the per-tensor benchmark on tiny weights once and
// writes its reports: it checks the plumbing, not the speed.
func TestTensorsSmoke(t *testing.T) {
	orttest.Require(t)
	requireBLAS(t)
	rows, err := RunTensors(TensorConfig{Dims: []int{64, 128}, Densities: []float64{0.02}, DTypes: []tensor.DType{tensor.Float32, tensor.Float16},
		Threads: []int{1, 2}, Rounds: 1, Seed: 1, BandwidthBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 8 {
		t.Fatalf("%d rows, want 8", len(rows))
	}
	for _, r := range rows {
		if r.SwitchMs <= 0 || r.LoraSwitchMs <= 0 || r.Lora2GemmMs <= 0 || r.MergeSwitchMs <= 0 || r.SwitchFloorMs <= 0 || r.PatternFloorMs <= 0 || r.Rank < 1 {
			t.Errorf("bad row %+v", r)
		}
	}
	var md bytes.Buffer
	rep := &Report{Tensors: rows}
	rep.Markdown(&md)
	if !bytes.Contains(md.Bytes(), []byte("| 128 |")) {
		t.Errorf("markdown lacks the d=128 rows:\n%s", md.String())
	}
	dir := t.TempDir()
	if err := rep.Plots(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir + "/" + TensorPlotFile); err != nil {
		t.Fatal(err)
	}
}

func TestUnionLines(t *testing.T) {
	got := unionLines([]uint32{0, 15, 40, 1000}, []uint32{3, 16, 33, 2000}, 4)
	if want := []uint32{0, 1, 2, 62, 125}; !slices.Equal(got, want) {
		t.Errorf("unionLines = %v, want %v", got, want)
	}
}

// TestPatternLeavesTheWeight runs the pattern floor on a weight
// and checks that it leaves the weight's values unchanged.
func TestPatternLeavesTheWeight(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	w := randomWeight(tensor.Float32, 1<<12, rng)
	before := bytes.Clone(w)
	p := newPattern(w, 4, []uint32{1, 17, 4000}, []uint32{2, 900}, 2)
	p.run()
	if !bytes.Equal(w, before) {
		t.Fatal("the pattern changed the weight")
	}
	if n := len(p.lines[0]) + len(p.lines[1]); n != 4 {
		t.Fatalf("%d lines, want 4", n)
	}
}

func TestLinesTouched(t *testing.T) {
	if n := linesTouched([]uint32{0, 15, 16, 31, 32, 1000}, 4); n != 4 {
		t.Errorf("fp32: %d lines, want 4", n)
	}
	if n := linesTouched([]uint32{0, 31, 32}, 2); n != 2 {
		t.Errorf("fp16: %d lines, want 2", n)
	}
	if r := LoraRank(167772, 4096, 4096); r != 20 {
		t.Errorf("LoraRank = %d, want 20", r)
	}
}

// BenchmarkSwitchTensor is the per-tensor comparison as Go benchmarks:
// one d×d weight at 1 % and 2 %, SHiRA switch A→B (patch.Set with A
// active) against the in-place LoRA switch (unfuse A and fuse B as one
// BLAS GEMM) at the equal-parameter rank. `shira-bench switch` runs the full sweep with
// interleaved rounds and evicts the weight from the caches before each
// step (this benchmark does not); use -count and benchstat here.
func BenchmarkSwitchTensor(b *testing.B) {
	orttest.Require(b)
	for _, dt := range []tensor.DType{tensor.Float32, tensor.Float16} {
		for _, d := range []int{2048, 4096} {
			for _, dens := range []float64{0.01, 0.02} {
				benchSwitchTensor(b, dt, d, dens)
			}
		}
	}
}

// benchSwitchTensor runs the SHiRA and the LoRA switch of one case.
func benchSwitchTensor(b *testing.B, dt tensor.DType, d int, dens float64) {
	rng := rand.New(rand.NewPCG(1, uint64(d)))
	w := patch.Weight{Name: "w", DType: dt, Shape: []int64{int64(d), int64(d)}, Data: randomWeight(dt, d*d, rng)}
	A, err := randomShira("A", []patch.Weight{w}, dens, dt, rng)
	if err != nil {
		b.Fatal(err)
	}
	B, err := randomShira("B", []patch.Weight{w}, dens, dt, rng)
	if err != nil {
		b.Fatal(err)
	}
	r := LoraRank(A.NNZ(), d, d)
	la, lb := randomLora("A", r, d, d, rng), randomLora("B", r, d, d, rng)
	b.Run(fmt.Sprintf("%v/d=%d/%g%%/shira", dt, d, dens*100), func(b *testing.B) {
		p, err := patch.New([]patch.Weight{w})
		if err != nil {
			b.Fatal(err)
		}
		cfgs := [2]patch.Config{{Adapter: A, Alpha: 1}, {Adapter: B, Alpha: 1}}
		p.Set(cfgs[0])
		k := 1
		for b.Loop() {
			if err := p.Set(cfgs[k]); err != nil {
				b.Fatal(err)
			}
			k = 1 - k
		}
		p.Revert()
	})
	b.Run(fmt.Sprintf("%v/d=%d/%g%%/lora-inplace", dt, d, dens*100), func(b *testing.B) {
		requireBLAS(b)
		mods := [2]*peft.LoraModule{&la, &lb}
		th := runtime.GOMAXPROCS(0)
		if err := switchInPlace(w.Data, dt, peft.OutIn, nil, mods[0], th); err != nil {
			b.Fatal(err)
		}
		k := 1
		for b.Loop() {
			if err := switchInPlace(w.Data, dt, peft.OutIn, mods[1-k], mods[k], th); err != nil {
				b.Fatal(err)
			}
			k = 1 - k
		}
		if err := switchInPlace(w.Data, dt, peft.OutIn, mods[1-k], nil, th); err != nil {
			b.Fatal(err)
		}
	})
}

// requireBLAS is orttest.RequireBLAS.
var requireBLAS = orttest.RequireBLAS

// BenchmarkCopyBandwidth is the floor's denominator (CopyBandwidth): one
// copy of bandwidthBytes per op, counted as 2·size bytes moved (read plus
// write), so MB/s is the bandwidth CopyBandwidth reports.
func BenchmarkCopyBandwidth(b *testing.B) {
	src, dst := copyBuffers(bandwidthBytes)
	for _, th := range []int{1, 2} {
		b.Run(fmt.Sprintf("threads=%d", th), func(b *testing.B) {
			b.SetBytes(2 * bandwidthBytes)
			for b.Loop() {
				parallelCopy(dst, src, th)
			}
		})
	}
}

// TestWriteLoraCheckpoint reads the LoRA baseline's checkpoint back
// through peft.
func TestWriteLoraCheckpoint(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	want := []peft.LoraModule{randomLora("layers.0.q", 2, 8, 6, rng), randomLora("layers.1.v", 3, 5, 4, rng)}
	dir := t.TempDir()
	if err := writeLoraCheckpoint(dir, want); err != nil {
		t.Fatal(err)
	}
	c, err := peft.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Lora()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d modules read back, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Module != w.Module || g.R != w.R || g.In != w.In || g.Out != w.Out || g.Scale != w.Scale ||
			!slices.Equal(g.A, w.A) || !slices.Equal(g.B, w.B) {
			t.Errorf("module %d read back as %+v, want %+v", i, g, w)
		}
	}
}
