package patch

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/testutil"
	"github.com/shira-ort/shira-ort/tensor"
)

// benchAdapter builds an adapter touching density of each weight, with a
// random sorted mask.
func benchAdapter(ws []Weight, vdt tensor.DType, sem adapter.Semantics, density float64, seed uint64) *adapter.Adapter {
	rng := rand.New(rand.NewPCG(seed, seed))
	a := &adapter.Adapter{Semantics: sem, DefaultAlpha: 1}
	for _, w := range ws {
		n, _ := tensor.NumElements(w.Shape)
		k := max(1, int(density*float64(n)))
		seen := make(map[uint32]bool, k)
		ix := make([]uint32, 0, k)
		for len(ix) < k {
			i := uint32(rng.IntN(n))
			if !seen[i] {
				seen[i] = true
				ix = append(ix, i)
			}
		}
		vals := make([]float32, k)
		for i := range vals {
			vals[i] = float32(rng.NormFloat64())
		}
		t, err := adapter.NewTensor(w.Name, w.DType, w.Shape, ix, vals, vdt)
		if err != nil {
			panic(err)
		}
		a.Tensors = append(a.Tensors, t)
	}
	return a
}

func benchWeights(dt tensor.DType, count int, shape []int64) []Weight {
	rng := rand.New(rand.NewPCG(1, 1))
	ws := make([]Weight, count)
	for i := range ws {
		n, _ := tensor.NumElements(shape)
		ws[i] = Weight{Name: fmt.Sprint("w", i), DType: dt, Shape: shape, Data: randomData(dt, n, rng)}
	}
	return ws
}

// benchSwitch measures one apply + one revert of a per op. SetBytes counts
// the adapter payload (index + value bytes) processed per op.
func benchSwitch(b *testing.B, ws []Weight, a *adapter.Adapter, alpha float32) {
	p, err := New(ws)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(a.NNZ() * (4 + a.Tensors[0].ValueDType.Size())))
	b.ReportAllocs()
	defer cpuTimer(b)()
	for b.Loop() {
		if err := p.Set(Config{a, alpha}); err != nil {
			b.Fatal(err)
		}
		p.Revert()
	}
}

func BenchmarkSwitch4096x4096(b *testing.B) {
	for _, c := range []struct {
		name   string
		dt     tensor.DType
		sem    adapter.Semantics
		alpha  float32
		vdtype tensor.DType
	}{
		{"fp32/overwrite", tensor.Float32, adapter.Overwrite, 1, tensor.Float32},
		{"fp32/delta", tensor.Float32, adapter.Delta, 1, tensor.Float32},
		{"fp32/overwrite-alpha0.5", tensor.Float32, adapter.Overwrite, 0.5, tensor.Float32},
		{"fp16/overwrite", tensor.Float16, adapter.Overwrite, 1, tensor.Float16},
		{"fp16/delta", tensor.Float16, adapter.Delta, 1, tensor.Float16},
		{"bf16/delta", tensor.BFloat16, adapter.Delta, 1, tensor.BFloat16},
		{"fp16/fp32-values-delta", tensor.Float16, adapter.Delta, 1, tensor.Float32},
	} {
		b.Run(c.name, func(b *testing.B) {
			ws := benchWeights(c.dt, 1, []int64{4096, 4096})
			benchSwitch(b, ws, benchAdapter(ws, c.vdtype, c.sem, 0.01, 7), c.alpha)
		})
	}
}

// BenchmarkSwitchAB alternates between two adapters (Set A, Set B): the
// live-session switch.
func BenchmarkSwitchAB4096x4096fp32(b *testing.B) {
	ws := benchWeights(tensor.Float32, 1, []int64{4096, 4096})
	A := benchAdapter(ws, tensor.Float32, adapter.Overwrite, 0.01, 1)
	B := benchAdapter(ws, tensor.Float32, adapter.Overwrite, 0.01, 2)
	p, err := New(ws)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(A.NNZ() * 8))
	b.ReportAllocs()
	defer cpuTimer(b)()
	for b.Loop() {
		if err := p.Set(Config{A, 1}); err != nil {
			b.Fatal(err)
		}
		if err := p.Set(Config{B, 1}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSwitchFused3x4096x4096fp32(b *testing.B) {
	ws := benchWeights(tensor.Float32, 1, []int64{4096, 4096})
	cfgs := []Config{{benchAdapter(ws, tensor.Float32, adapter.Overwrite, 0.01, 1), 1},
		{benchAdapter(ws, tensor.Float32, adapter.Delta, 0.01, 2), 0.5},
		{benchAdapter(ws, tensor.Float32, adapter.Overwrite, 0.01, 3), 1}}
	p, err := New(ws)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(3 * cfgs[0].Adapter.NNZ() * 8))
	b.ReportAllocs()
	defer cpuTimer(b)()
	for b.Loop() {
		if err := p.Set(cfgs...); err != nil {
			b.Fatal(err)
		}
		p.Revert()
	}
}

// BenchmarkSwitchManySmall: 512 tensors of 256x256 fp16 at 1 %, patched in
// parallel.
func BenchmarkSwitchManySmall512x256x256fp16(b *testing.B) {
	ws := benchWeights(tensor.Float16, 512, []int64{256, 256})
	benchSwitch(b, ws, benchAdapter(ws, tensor.Float16, adapter.Overwrite, 0.01, 3), 1)
}

// flushBuf is larger than the last-level cache (32 MiB on the project
// machine).
var flushBuf []byte

// flushCaches evicts everything from the caches: it writes one byte of
// every line of flushBuf (96 MiB, 3 × L3) with ordinary stores. clear()
// would not do: for buffers that large Go's memclr uses non-temporal
// stores, which bypass the caches and leave the weight cached.
func flushCaches() {
	f := flushBuf
	for i := 0; i < len(f); i += 64 {
		f[i]++
	}
}

// BenchmarkSwitchCold is the per-tensor switch of internal/switchbench
// without ORT: with A active, each op is one Set to the other adapter
// (A→B, B→A, ...) on a weight evicted from the caches first, as in a
// model of gigabytes. It reports the median wall and process CPU time
// of a switch (the eviction is not counted); medians move far less than
// means on a shared machine.
func BenchmarkSwitchCold(b *testing.B) { runSwitchCases(b, benchSwitchCold) }

// runSwitchCases runs bench for every (dtype, d, density, workers) case
// of the cold switch benchmarks, with the cache-flush buffer allocated.
func runSwitchCases(b *testing.B, bench func(b *testing.B, dt tensor.DType, d int, dens float64, workers int)) {
	if flushBuf == nil {
		flushBuf = make([]byte, 96<<20)
	}
	for _, dt := range []tensor.DType{tensor.Float32, tensor.Float16} {
		for _, d := range []int{2048, 4096} {
			for _, dens := range []float64{0.01, 0.02} {
				for _, workers := range []int{1, 2} {
					name := fmt.Sprintf("%v/d=%d/%g%%/workers=%d", dt, d, dens*100, workers)
					b.Run(name, func(b *testing.B) { bench(b, dt, d, dens, workers) })
				}
			}
		}
	}
}

func benchSwitchCold(b *testing.B, dt tensor.DType, d int, dens float64, workers int) {
	ws := benchWeights(dt, 1, []int64{int64(d), int64(d)})
	cfgs := [2]Config{{benchAdapter(ws, dt, adapter.Overwrite, dens, 1), 1}, {benchAdapter(ws, dt, adapter.Overwrite, dens, 2), 1}}
	p, err := New(ws, WithWorkers(workers))
	if err != nil {
		b.Fatal(err)
	}
	if err := p.Set(cfgs[0]); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var wall, cpu []float64
	k := 1
	for b.Loop() {
		b.StopTimer()
		flushCaches()
		b.StartTimer()
		t0, c0 := time.Now(), cpuNow()
		if err := p.Set(cfgs[k]); err != nil {
			b.Fatal(err)
		}
		wall = append(wall, float64(time.Since(t0))/1e6)
		cpu = append(cpu, float64(cpuNow()-c0)/1e6)
		k = 1 - k
	}
	b.ReportMetric(medianOf(wall), "ms-median")
	b.ReportMetric(medianOf(cpu), "cpu-ms-median")
}

func medianOf(x []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	s := slices.Clone(x)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkSwitchPasses compares the one-pass switch with the two-pass
// path (revert, then apply) in one process: the ops cycle through
// A→B one-pass, B→A one-pass, A→B two-pass, B→A two-pass, each on a
// weight evicted from the caches, so both see the same machine load. It
// reports both medians and their ratio.
func BenchmarkSwitchPasses(b *testing.B) { runSwitchCases(b, benchSwitchPasses) }

func benchSwitchPasses(b *testing.B, dt tensor.DType, d int, dens float64, workers int) {
	testutil.Replace(b, &onePass, onePass) // toggled per op below
	ws := benchWeights(dt, 1, []int64{int64(d), int64(d)})
	cfgs := [2]Config{{benchAdapter(ws, dt, adapter.Overwrite, dens, 1), 1}, {benchAdapter(ws, dt, adapter.Overwrite, dens, 2), 1}}
	p, err := New(ws, WithWorkers(workers))
	if err != nil {
		b.Fatal(err)
	}
	if err := p.Set(cfgs[0]); err != nil {
		b.Fatal(err)
	}
	var one, two []float64
	op := 0
	for b.Loop() {
		b.StopTimer()
		flushCaches()
		onePass = op&2 == 0
		b.StartTimer()
		t0 := time.Now()
		if err := p.Set(cfgs[1-op&1]); err != nil {
			b.Fatal(err)
		}
		if dt := float64(time.Since(t0)) / 1e6; onePass {
			one = append(one, dt)
		} else {
			two = append(two, dt)
		}
		op++
	}
	b.ReportMetric(medianOf(one), "ms-1pass")
	b.ReportMetric(medianOf(two), "ms-2pass")
	b.ReportMetric(medianOf(two)/medianOf(one), "2pass/1pass")
}
