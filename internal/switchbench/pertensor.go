package switchbench

import (
	"cmp"
	"fmt"
	"io"
	"math/rand/v2"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/mask"
	"github.com/shira-ort/shira-ort/lora"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/peft"
	"github.com/shira-ort/shira-ort/tensor"
)

// TensorConfig configures the per-tensor benchmark (the paper's Fig. 7).
type TensorConfig struct {
	// Dims are the sizes d of the square d×d weights.
	Dims []int
	// Densities are the SHiRA densities (fraction of entries touched).
	Densities []float64
	// DTypes are the weight dtypes (Float32, Float16); SHiRA values are
	// stored in the weight dtype.
	DTypes []tensor.DType
	// Threads lists the thread counts to run with (patch workers, ORT
	// intra-op threads and LoRA add goroutines).
	Threads []int
	// Rounds is the number of timed rounds per case (after one warm-up).
	Rounds int
	// Seed seeds the random weights, masks and factors.
	Seed uint64
	// BandwidthBytes is the size of the copy that measures bandwidth (0:
	// 256 MiB).
	BandwidthBytes int
	// Log receives progress lines (nil: none).
	Log io.Writer
}

// DefaultTensorConfig is the full per-tensor sweep.
func DefaultTensorConfig() TensorConfig {
	return TensorConfig{Dims: []int{1024, 2048, 4096, 8192}, Densities: []float64{0.01, 0.02},
		DTypes: []tensor.DType{tensor.Float32, tensor.Float16}, Threads: []int{1, 2}, Rounds: 7, Seed: 1}
}

// TensorRow is one per-tensor case; times are medians in milliseconds.
type TensorRow struct {
	D       int     `json:"d"`
	Density float64 `json:"density"`
	DType   string  `json:"dtype"`
	Threads int     `json:"threads"`
	// NNZ is the number of SHiRA entries, Rank the equal-parameter LoRA
	// rank (NNZ = Rank·2d).
	NNZ  int `json:"nnz"`
	Rank int `json:"rank"`
	// SHiRA: Set(A) on the base, Revert, and Set(B) while A is active.
	ApplyMs  float64 `json:"apply_ms"`
	RevertMs float64 `json:"revert_ms"`
	SwitchMs float64 `json:"switch_ms"`
	// LoRA, in place with BLAS (lora.AddInPlace): W += s·B·A and
	// W −= s·B·A, one GEMM each, and the switch A→B as one GEMM over the
	// concatenated factors (LoraSwitchMs, the headline baseline).
	FuseMs       float64 `json:"fuse_ms"`
	UnfuseMs     float64 `json:"unfuse_ms"`
	LoraSwitchMs float64 `json:"lora_switch_ms"`
	// Lora2GemmMs is the switch as two in-place GEMMs (unfuse A, then
	// fuse B); MergeSwitchMs the PEFT-style merge (ONNX Runtime computes
	// each dense s·B·A, added into W in a second pass), for context.
	Lora2GemmMs   float64 `json:"lora_2gemm_switch_ms"`
	MergeSwitchMs float64 `json:"merge_switch_ms"`
	// SwitchCPUMs and LoraSwitchCPUMs are the switches' median process
	// CPU times (all threads); the LoRA one is the headline's.
	SwitchCPUMs     float64 `json:"switch_cpu_ms"`
	LoraSwitchCPUMs float64 `json:"lora_switch_cpu_ms"`
	// BandwidthGBs is the copy bandwidth measured with Threads threads.
	BandwidthGBs float64 `json:"bandwidth_gbs"`
	// SwitchBytes is what the SHiRA switch must move: every cache line of
	// the union of A's and B's entries read and written once, plus the
	// index, value and saved-original streams. SwitchFloorMs is that over
	// the copy bandwidth (the streaming floor); PatternFloorMs is the
	// measured time of the least work with the switch's access pattern
	// (the pattern floor: those lines touched in address order and the
	// streams, on Threads threads). LoraFloorMs is the in-place LoRA
	// switch's streaming floor: W read and written once (a free product).
	SwitchBytes    int64   `json:"switch_bytes"`
	SwitchFloorMs  float64 `json:"switch_floor_ms"`
	PatternFloorMs float64 `json:"pattern_floor_ms"`
	LoraFloorMs    float64 `json:"lora_floor_ms"`
}

// Speedup is the in-place LoRA switch time (one GEMM) over the SHiRA
// switch time: the headline ratio.
func (r TensorRow) Speedup() float64 { return ratio(r.LoraSwitchMs, r.SwitchMs) }

// MergeSpeedup is the PEFT-style merge switch time over the SHiRA switch
// time (context only: a weak baseline).
func (r TensorRow) MergeSpeedup() float64 { return ratio(r.MergeSwitchMs, r.SwitchMs) }

// CPUSpeedup is the LoRA switch CPU time over the SHiRA switch CPU time.
func (r TensorRow) CPUSpeedup() float64 { return ratio(r.LoraSwitchCPUMs, r.SwitchCPUMs) }

// FloorMultiple is the SHiRA switch time over its pattern floor.
func (r TensorRow) FloorMultiple() float64 { return ratio(r.SwitchMs, r.PatternFloorMs) }

// StreamFloorMultiple is the SHiRA switch time over its streaming floor.
func (r TensorRow) StreamFloorMultiple() float64 { return ratio(r.SwitchMs, r.SwitchFloorMs) }

// bandwidthBytes is the default size of the copy that measures
// bandwidth (far larger than the caches).
const bandwidthBytes = 256 << 20

// RunTensors runs the per-tensor benchmark. ort.Init must have succeeded.
func RunTensors(cfg TensorConfig) ([]TensorRow, error) {
	logf := logger(cfg.Log)
	var rows []TensorRow
	for _, th := range cfg.Threads {
		eng, err := lora.NewEngine(loraOptions(th))
		if err != nil {
			return nil, fmt.Errorf("switchbench: %w", err)
		}
		if _, err := lora.BLAS(); err != nil {
			eng.Close()
			return nil, fmt.Errorf("switchbench: the in-place LoRA baseline: %w", err)
		}
		bw := CopyBandwidth(cmp.Or(cfg.BandwidthBytes, bandwidthBytes), th, 9)
		logf("threads=%d: copy bandwidth %.1f GB/s", th, bw/1e9)
		for _, dt := range cfg.DTypes {
			for _, d := range cfg.Dims {
				for _, dens := range cfg.Densities {
					r, err := runTensor(eng, cfg, d, dens, dt, th, bw)
					if err != nil {
						eng.Close()
						return nil, err
					}
					logf("%v d=%d %.0f%% threads=%d: shira switch %.2f ms, in-place lora switch %.2f ms (%.1f×; 2 GEMMs %.2f ms, PEFT-style merge %.1f ms), %.2f× pattern floor, %.2f× streaming floor",
						dt, d, dens*100, th, r.SwitchMs, r.LoraSwitchMs, r.Speedup(), r.Lora2GemmMs, r.MergeSwitchMs, r.FloorMultiple(), r.StreamFloorMultiple())
					rows = append(rows, r)
				}
			}
		}
		if err := eng.Close(); err != nil {
			return nil, fmt.Errorf("switchbench: %w", err)
		}
	}
	return rows, nil
}

func runTensor(eng *lora.Engine, cfg TensorConfig, d int, dens float64, dt tensor.DType, threads int, bw float64) (TensorRow, error) {
	rng := rand.New(rand.NewPCG(cfg.Seed, uint64(d)))
	shape := []int64{int64(d), int64(d)}
	w := patch.Weight{Name: "w", DType: dt, Shape: shape, Data: randomWeight(dt, d*d, rng)}
	A, err := randomShira("A", []patch.Weight{w}, dens, dt, rng)
	if err != nil {
		return TensorRow{}, err
	}
	B, err := randomShira("B", []patch.Weight{w}, dens, dt, rng)
	if err != nil {
		return TensorRow{}, err
	}
	ta, tb := &A.Tensors[0], &B.Tensors[0]
	rank := LoraRank(ta.NNZ(), d, d)
	la, lb := randomLora("A", rank, d, d, rng), randomLora("B", rank, d, d, rng)
	p, err := patch.New([]patch.Weight{w}, patch.WithWorkers(threads))
	if err != nil {
		return TensorRow{}, fmt.Errorf("switchbench: %w", err)
	}
	es := dt.Size()
	pat := newPattern(w.Data, es, ta.Indices, tb.Indices, threads)
	var apply, revert, sw, fuse, unfuse, lsw, l2, merge, pfloor samples
	for round := range cfg.Rounds + 1 {
		// the LoRA steps start and end on the base weight (up to rounding):
		// fuse A, switch A→B (one GEMM), B→A (two GEMMs), A→B (PEFT-style
		// merge), unfuse B
		steps := []struct {
			s *samples
			f func() error
		}{
			{&apply, func() error { return p.Set(patch.Config{Adapter: A, Alpha: 1}) }},
			{&sw, func() error { return p.Set(patch.Config{Adapter: B, Alpha: 1}) }},
			{&revert, func() error { p.Revert(); return nil }},
			{&pfloor, func() error { pat.run(); return nil }},
			{&fuse, func() error { return switchInPlace(w.Data, dt, peft.OutIn, nil, &la, threads) }},
			{&lsw, func() error { return switchInPlace(w.Data, dt, peft.OutIn, &la, &lb, threads) }},
			{&l2, func() error {
				if err := switchInPlace(w.Data, dt, peft.OutIn, &lb, nil, threads); err != nil {
					return err
				}
				return switchInPlace(w.Data, dt, peft.OutIn, nil, &la, threads)
			}},
			{&merge, func() error {
				if err := mergePEFT(eng, w.Data, dt, &la, peft.OutIn, -1, threads); err != nil {
					return err
				}
				return mergePEFT(eng, w.Data, dt, &lb, peft.OutIn, 1, threads)
			}},
			{&unfuse, func() error { return switchInPlace(w.Data, dt, peft.OutIn, &lb, nil, threads) }},
		}
		for _, st := range steps {
			flushCaches()
			if err := st.s.time(st.f); err != nil {
				return TensorRow{}, fmt.Errorf("switchbench: d=%d: %w", d, err)
			}
			if round == 0 { // warm-up
				*st.s = samples{}
			}
		}
	}
	lines := int64(len(unionLines(ta.Indices, tb.Indices, es)))
	streams := int64(ta.NNZ())*int64(4+es) + int64(tb.NNZ())*int64(4+es+es)
	bytes := 128*lines + streams
	return TensorRow{D: d, Density: dens, DType: dt.String(), Threads: threads, NNZ: ta.NNZ(), Rank: rank,
		ApplyMs: apply.median(), RevertMs: revert.median(), SwitchMs: sw.median(),
		FuseMs: fuse.median(), UnfuseMs: unfuse.median(), LoraSwitchMs: lsw.median(),
		Lora2GemmMs: l2.median(), MergeSwitchMs: merge.median(),
		SwitchCPUMs: sw.cpuMedian(), LoraSwitchCPUMs: lsw.cpuMedian(),
		BandwidthGBs: bw / 1e9, SwitchBytes: bytes, SwitchFloorMs: floorMs(bytes, bw), PatternFloorMs: pfloor.median() + floorMs(streams, bw),
		LoraFloorMs: floorMs(2*int64(len(w.Data)), bw)}, nil
}

// flushBuf is larger than the last-level cache (32 MiB on the project
// machine).
var flushBuf []byte

// flushCaches evicts the weight from the CPU caches before a timed step,
// as in a real model whose gigabytes of weights are not cache resident
// (without it a 1024² weight would be patched in L3 and beat the DRAM
// floor): it writes one byte of every line of flushBuf with ordinary
// stores. clear() would not do: for a buffer this large Go's memclr uses
// non-temporal stores, which bypass the caches and leave the weight in
// them.
func flushCaches() {
	if flushBuf == nil {
		flushBuf = make([]byte, 96<<20)
	}
	f := flushBuf
	for i := 0; i < len(f); i += 64 {
		f[i]++
	}
}

// loraOptions are the ORT options of the LoRA product sessions: threads
// intra-op threads that sleep instead of spinning when idle (spinning
// threads only steal cores on a shared machine and inflate CPU time).
func loraOptions(threads int) *ort.Options {
	return &ort.Options{IntraOpThreads: threads, InterOpThreads: 1,
		SessionConfig: map[string]string{"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}}
}

// randomWeight returns n random elements of dt (uniform in ±0.05),
// 8-byte aligned.
func randomWeight(dt tensor.DType, n int, rng *rand.Rand) []byte {
	buf := make([]int64, (n*dt.Size()+7)/8)
	b := tensor.Bytes(buf)[:n*dt.Size()]
	fillRandom(dt, b, rng)
	return b
}

func fillRandom(dt tensor.DType, b []byte, rng *rand.Rand) {
	switch dt {
	case tensor.Float32:
		f := tensor.Float32s(b)
		for i := range f {
			f[i] = (rng.Float32()*2 - 1) * 0.05
		}
	default:
		h := tensor.Uint16s(b)
		for i := range h {
			v := (rng.Float32()*2 - 1) * 0.05
			if dt == tensor.Float16 {
				h[i] = tensor.Float32ToFloat16(v)
			} else {
				h[i] = tensor.Float32ToBFloat16(v)
			}
		}
	}
}

// randomShira returns an overwrite adapter touching density of every
// weight at uniformly random positions, values stored as vdt.
func randomShira(name string, ws []patch.Weight, density float64, vdt tensor.DType, rng *rand.Rand) (*adapter.Adapter, error) {
	a := &adapter.Adapter{Name: name, DefaultAlpha: 1, Semantics: adapter.Overwrite}
	for _, w := range ws {
		n, err := tensor.NumElements(w.Shape)
		if err != nil {
			return nil, fmt.Errorf("switchbench: %w", err)
		}
		ix, err := mask.Random(n, mask.Count(n, density), rng)
		if err != nil {
			return nil, fmt.Errorf("switchbench: %w", err)
		}
		vals := randomWeight(vdt, len(ix), rng)
		a.Tensors = append(a.Tensors, adapter.Tensor{Name: w.Name, DType: w.DType, ValueDType: vdt,
			Shape: append([]int64(nil), w.Shape...), Indices: ix, Values: vals})
	}
	if err := a.Validate(); err != nil {
		return nil, fmt.Errorf("switchbench: %w", err)
	}
	return a, nil
}
