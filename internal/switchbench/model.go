package switchbench

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"github.com/nlpodyssey/safetensors"
	"golang.org/x/sys/unix"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/sessionbench"
	"github.com/shira-ort/shira-ort/lora"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/peft"
	"github.com/shira-ort/shira-ort/tensor"
)

// ModelConfig configures the whole-model benchmark (the paper's Table 6).
type ModelConfig struct {
	// Dir caches the generated model (sessionbench.Generate(LLM,
	// Dir/llm)); Work holds the adapter files (a temporary directory
	// when empty).
	Dir, Work string
	// Layers keeps the weights of the first Layers blocks (0: all 22).
	Layers int
	// DTypes are the weight dtypes (the fp32 model converted in memory).
	DTypes []tensor.DType
	// Density is the SHiRA density; LoRA gets the equal-parameter rank
	// per weight.
	Density float64
	// Threads lists the thread counts.
	Threads []int
	// Rounds is the number of timed switches per cache state.
	Rounds int
	// Seed seeds the adapters.
	Seed uint64
	// Log receives progress lines (nil: none).
	Log io.Writer
}

// ModelRow is one whole-model case; times are medians in milliseconds.
type ModelRow struct {
	DType   string `json:"dtype"`
	Layers  int    `json:"layers"`
	Params  int64  `json:"params"`
	Tensors int    `json:"tensors"`
	Threads int    `json:"threads"`
	// Cache is "warm" or "cold" (adapter file pages dropped with
	// posix_fadvise(DONTNEED) before the switch); ColdResident is the
	// fraction of the SHiRA file's pages still resident after the drop.
	Cache        string  `json:"cache"`
	ColdResident float64 `json:"cold_resident,omitempty"`
	// SHiRA: adapter.Open (mmap + verify) then patch.Set (reverting the
	// active adapter).
	ShiraFileMB float64 `json:"shira_file_mb"`
	ShiraOpenMs float64 `json:"shira_open_ms"`
	ShiraSetMs  float64 `json:"shira_set_ms"`
	ShiraMs     float64 `json:"shira_ms"`
	// LoRA: peft.Open + Lora() (read the safetensors checkpoint), then per
	// weight one in-place BLAS GEMM that unfuses the old and fuses the new
	// product (lora.AddInPlace over the concatenated factors).
	LoraFileMB float64 `json:"lora_file_mb"`
	LoraReadMs float64 `json:"lora_read_ms"`
	LoraFuseMs float64 `json:"lora_fuse_ms"`
	LoraMs     float64 `json:"lora_ms"`
	// ShiraCPUMs and LoraCPUMs are the switches' median process CPU
	// times.
	ShiraCPUMs float64 `json:"shira_cpu_ms"`
	LoraCPUMs  float64 `json:"lora_cpu_ms"`
	// SetFloorMs is the traffic floor of the SHiRA Set over the copy
	// bandwidth measured with Threads threads.
	SetFloorMs   float64 `json:"set_floor_ms"`
	BandwidthGBs float64 `json:"bandwidth_gbs"`
}

// Speedup is the LoRA switch time over the SHiRA switch time.
func (m ModelRow) Speedup() float64 { return ratio(m.LoraMs, m.ShiraMs) }

// modelWeights reads the selected fp32 weights of the exported model.
func modelWeights(dir string, layers int) (*export.Manifest, []export.TensorEntry, [][]byte, error) {
	_, exported, err := sessionbench.Generate(sessionbench.LLM, filepath.Join(dir, string(sessionbench.LLM)))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("switchbench: %w", err)
	}
	em, err := export.Open(exported)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("switchbench: %w", err)
	}
	defer em.Close()
	m := em.Manifest()
	f, err := os.Open(filepath.Join(exported, m.WeightsFile))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("switchbench: %w", err)
	}
	defer f.Close()
	var sel []export.TensorEntry
	var data [][]byte
	for _, e := range m.Tensors {
		var l int
		if _, err := fmt.Sscanf(e.Name, "l%d.", &l); err == nil && layers > 0 && l >= layers {
			continue // a block beyond --layers; the LM head is always kept
		}
		if e.DType != tensor.Float32 {
			return nil, nil, nil, fmt.Errorf("switchbench: %s is %v, want float32", e.Name, e.DType)
		}
		b := alignedBytes(int(e.Length))
		if _, err := f.ReadAt(b, e.Offset); err != nil {
			return nil, nil, nil, fmt.Errorf("switchbench: reading %s: %w", e.Name, err)
		}
		sel = append(sel, e)
		data = append(data, b)
	}
	return m, sel, data, nil
}

func alignedBytes(n int) []byte {
	return tensor.Bytes(make([]int64, (n+7)/8))[:n]
}

// toDType converts fp32 weight bytes to dt (a new buffer; fp32 returns b).
func toDType(b []byte, dt tensor.DType) []byte {
	if dt == tensor.Float32 {
		return b
	}
	f := tensor.Float32s(b)
	out := alignedBytes(len(f) * 2)
	h := tensor.Uint16s(out)
	if dt == tensor.Float16 {
		tensor.Float32sToFloat16(h, f)
		return out
	}
	for i, v := range f {
		h[i] = tensor.Float32ToBFloat16(v)
	}
	return out
}

// RunModel runs the whole-model benchmark. ort.Init must have succeeded.
func RunModel(cfg ModelConfig) ([]ModelRow, error) {
	logf := logger(cfg.Log)
	work, cleanup, err := workDir(cfg.Work)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	logf("model: generating or loading the TinyLlama-shaped model in %s", cfg.Dir)
	_, entries, f32, err := modelWeights(cfg.Dir, cfg.Layers)
	if err != nil {
		return nil, err
	}
	layers := cfg.Layers
	if layers <= 0 {
		layers = 22
	}
	var rows []ModelRow
	for _, dt := range cfg.DTypes {
		ws := make([]patch.Weight, len(entries))
		var params int64
		for i, e := range entries {
			ws[i] = patch.Weight{Name: e.Name, DType: dt, Shape: e.Shape, Data: toDType(f32[i], dt)}
			params += e.Length / 4
		}
		files, err := writeAdapters(work, dt, ws, cfg, logf)
		if err != nil {
			return nil, err
		}
		for _, th := range cfg.Threads {
			bw := CopyBandwidth(bandwidthBytes, th, 7)
			r, err := runModel(cfg, dt, ws, files, th, bw, logf)
			if err != nil {
				return nil, err
			}
			for i := range r {
				r[i].Layers, r[i].Params, r[i].Tensors, r[i].BandwidthGBs = layers, params, len(ws), bw/1e9
			}
			rows = append(rows, r...)
		}
		if dt != tensor.Float32 { // the fp32 buffers are reused by the next dtype
			for i := range ws {
				ws[i].Data = nil
			}
		}
	}
	return rows, nil
}

// adapterFiles are the two SHiRA files and LoRA checkpoint directories of
// one dtype, with what the floor needs.
type adapterFiles struct {
	shira, lora   [2]string
	shiraMB       float64
	loraMB        float64
	loraMods      [2][]peft.LoraModule // kept to unfuse / compare
	floorBytes    int64                // revert one + apply the other
	layout        peft.Layout
	firstLoraRank int
}

func writeAdapters(work string, dt tensor.DType, ws []patch.Weight, cfg ModelConfig, logf func(string, ...any)) (*adapterFiles, error) {
	af := &adapterFiles{layout: peft.InOut} // MatMul B weights are [in, out]
	var lines [2][]int64
	for k, name := range []string{"A", "B"} {
		rng := rand.New(rand.NewPCG(cfg.Seed, uint64(k)))
		a, err := randomShira(name, ws, cfg.Density, dt, rng)
		if err != nil {
			return nil, err
		}
		p := filepath.Join(work, fmt.Sprintf("%s-%v.shira", name, dt))
		if err := adapter.Write(p, a); err != nil {
			return nil, fmt.Errorf("switchbench: %w", err)
		}
		af.shira[k] = p
		for i := range a.Tensors {
			lines[k] = append(lines[k], linesTouched(a.Tensors[i].Indices, dt.Size()))
		}
		if k == 1 {
			es := dt.Size()
			for i := range a.Tensors {
				af.floorBytes += revertBytes(lines[0][i], a.Tensors[i].NNZ(), es) + applyBytes(lines[1][i], a.Tensors[i].NNZ(), es, es)
			}
		}
		var mods []peft.LoraModule
		for i, w := range ws {
			in, out := int(w.Shape[0]), int(w.Shape[1])
			r := LoraRank(a.Tensors[i].NNZ(), in, out)
			mods = append(mods, randomLora(w.Name, r, in, out, rng))
		}
		af.firstLoraRank = mods[0].R
		d := filepath.Join(work, fmt.Sprintf("lora-%s-%v", name, dt))
		if err := writeLoraCheckpoint(d, mods); err != nil {
			return nil, err
		}
		af.lora[k] = d
		af.loraMods[k] = mods
	}
	af.shiraMB = fileMB(af.shira[1])
	af.loraMB = fileMB(filepath.Join(af.lora[1], peft.WeightsFile))
	logf("model %v: %d weights, SHiRA files %.1f MB, LoRA files %.1f MB (rank %d on the first weight)", dt, len(ws), af.shiraMB, af.loraMB, af.firstLoraRank)
	return af, nil
}

func fileMB(p string) float64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return float64(st.Size()) / 1e6
}

// writeLoraCheckpoint writes mods as a PEFT LoRA checkpoint (fp32
// safetensors + adapter_config.json) that peft.Open reads.
func writeLoraCheckpoint(dir string, mods []peft.LoraModule) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("switchbench: %w", err)
	}
	cfg := map[string]any{"peft_type": "LORA", "r": 0, "fan_in_fan_out": false}
	cb, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, peft.ConfigFile), cb, 0o644); err != nil {
		return fmt.Errorf("switchbench: %w", err)
	}
	views := map[string]safetensors.TensorView{}
	for _, m := range mods {
		for _, t := range []struct {
			suffix string
			shape  []uint64
			data   []float32
		}{{"lora_A.weight", []uint64{uint64(m.R), uint64(m.In)}, m.A}, {"lora_B.weight", []uint64{uint64(m.Out), uint64(m.R)}, m.B}} {
			v, err := safetensors.NewTensorView(safetensors.F32, t.shape, tensor.Bytes(t.data))
			if err != nil {
				return fmt.Errorf("switchbench: %s %s: %w", m.Module, t.suffix, err)
			}
			views["base_model.model."+m.Module+"."+t.suffix] = v
		}
	}
	f, err := os.Create(filepath.Join(dir, peft.WeightsFile))
	if err != nil {
		return fmt.Errorf("switchbench: %w", err)
	}
	defer f.Close()
	if err := safetensors.SerializeToWriter(views, nil, f); err != nil {
		return fmt.Errorf("switchbench: %w", err)
	}
	if err := f.Sync(); err != nil { // clean pages, so fadvise can drop them
		return fmt.Errorf("switchbench: %w", err)
	}
	return f.Close()
}

// dropCache asks the kernel to drop the page cache of the file at p
// (posix_fadvise(POSIX_FADV_DONTNEED); only clean, unmapped pages go).
func dropCache(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("switchbench: fadvise %s: %w", p, err)
	}
	return nil
}

// resident returns the fraction of p's pages in the page cache (mincore).
func resident(p string) float64 {
	f, err := os.Open(p)
	if err != nil {
		return -1
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return -1
	}
	b, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return -1
	}
	defer unix.Munmap(b)
	pg := os.Getpagesize()
	vec := make([]byte, (len(b)+pg-1)/pg)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		return -1
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return float64(n) / float64(len(vec))
}

func runModel(cfg ModelConfig, dt tensor.DType, ws []patch.Weight, af *adapterFiles, threads int, bw float64, logf func(string, ...any)) ([]ModelRow, error) {
	if _, err := lora.BLAS(); err != nil {
		return nil, fmt.Errorf("switchbench: the in-place LoRA baseline: %w", err)
	}
	p, err := patch.New(ws, patch.WithWorkers(threads))
	if err != nil {
		return nil, fmt.Errorf("switchbench: %w", err)
	}
	byName := make(map[string]int, len(ws))
	for i, w := range ws {
		byName[w.Name] = i
	}
	// Start with A active in both worlds.
	cur, err := adapter.Open(af.shira[0])
	if err != nil {
		return nil, fmt.Errorf("switchbench: %w", err)
	}
	if err := p.Set(patch.Config{Adapter: cur, Alpha: 1}); err != nil {
		return nil, fmt.Errorf("switchbench: %w", err)
	}
	for i := range af.loraMods[0] {
		m := &af.loraMods[0][i]
		if err := switchInPlace(ws[byName[m.Module]].Data, dt, af.layout, nil, m, threads); err != nil {
			return nil, err
		}
	}
	curLora := af.loraMods[0]
	k := 0 // index of the active adapter
	var rows []ModelRow
	for _, cache := range []string{"warm", "cold"} {
		var open, set, total, read, fuse, ltotal samples
		var res float64
		for round := range cfg.Rounds + 1 {
			next := 1 - k
			if cache == "cold" {
				if err := dropCache(af.shira[next]); err != nil {
					return nil, err
				}
				if err := dropCache(filepath.Join(af.lora[next], peft.WeightsFile)); err != nil {
					return nil, err
				}
				res = resident(af.shira[next])
			}
			var na *adapter.Adapter
			err := total.time(func() error {
				err := open.time(func() (err error) { na, err = adapter.Open(af.shira[next]); return err })
				if err != nil {
					return err
				}
				return set.time(func() error { return p.Set(patch.Config{Adapter: na, Alpha: 1}) })
			})
			if err != nil {
				return nil, fmt.Errorf("switchbench: shira switch: %w", err)
			}
			cur.Close()
			cur = na
			if cache == "cold" {
				if err := dropCache(filepath.Join(af.lora[next], peft.WeightsFile)); err != nil {
					return nil, err
				}
			}
			var mods []peft.LoraModule
			err = ltotal.time(func() error {
				err := read.time(func() error {
					ck, err := peft.Open(af.lora[next])
					if err != nil {
						return err
					}
					mods, err = ck.Lora()
					return err
				})
				if err != nil {
					return err
				}
				return fuse.time(func() error {
					olds := make(map[int]*peft.LoraModule, len(curLora))
					for i := range curLora {
						olds[byName[strings.TrimPrefix(curLora[i].Module, "base_model.model.")]] = &curLora[i]
					}
					for i := range mods {
						m := &mods[i]
						j, ok := byName[strings.TrimPrefix(m.Module, "base_model.model.")]
						if !ok {
							return fmt.Errorf("module %s names no weight", m.Module)
						}
						if err := switchInPlace(ws[j].Data, dt, af.layout, olds[j], m, threads); err != nil {
							return err
						}
						delete(olds, j)
					}
					for j, m := range olds { // adapted by the old adapter only
						if err := switchInPlace(ws[j].Data, dt, af.layout, m, nil, threads); err != nil {
							return err
						}
					}
					return nil
				})
			})
			if err != nil {
				return nil, fmt.Errorf("switchbench: lora switch: %w", err)
			}
			curLora = mods
			k = next
			logf("model %v threads=%d %s round %d: SHiRA %.1f ms, LoRA %.1f ms", dt, threads, cache, round,
				total.last(), ltotal.last())
			if round == 0 { // warm-up
				open, set, total, read, fuse, ltotal = samples{}, samples{}, samples{}, samples{}, samples{}, samples{}
			}
		}
		rows = append(rows, ModelRow{DType: dt.String(), Threads: threads, Cache: cache, ColdResident: res,
			ShiraFileMB: af.shiraMB, ShiraOpenMs: open.median(), ShiraSetMs: set.median(), ShiraMs: total.median(),
			LoraFileMB: af.loraMB, LoraReadMs: read.median(), LoraFuseMs: fuse.median(), LoraMs: ltotal.median(),
			ShiraCPUMs: total.cpuMedian(), LoraCPUMs: ltotal.cpuMedian(),
			SetFloorMs: floorMs(af.floorBytes, bw)})
	}
	p.Revert()
	cur.Close()
	return rows, nil
}
