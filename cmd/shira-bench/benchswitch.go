package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shira-ort/shira-ort/internal/atomicfile"
	"github.com/shira-ort/shira-ort/internal/switchbench"
	"github.com/shira-ort/shira-ort/lora"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/tensor"
)

// newBenchSwitchCmd returns `shira-bench switch`: SHiRA switching
// against LoRA re-fusion per tensor and for a whole model, against the
// memory floor (docs/perf.md). The lead attaches it under `bench`.
func newBenchSwitchCmd() *cobra.Command {
	var (
		parts, dims, densities, dtypes, threads   string
		modelDTypes, modelThreads, dir, out, work string
		rounds, modelRounds, layers               int
		modelDensity                              float64
	)
	cmd := &cobra.Command{
		Use:   "switch",
		Short: "Measure SHiRA switching against LoRA fusion and the memory floor",
		Long: `switch measures, side by side in one run (medians over interleaved rounds):

  tensor  one d×d weight: SHiRA apply / revert / switch A→B against LoRA fuse /
          unfuse / switch at the equal-parameter rank (nnz = r·2d), in place
          with BLAS (OpenBLAS, beta = 1; the switch one GEMM over the
          concatenated factors), with two GEMMs and with the PEFT-style merge
          (dense product from ONNX Runtime, then added) for context; plus the
          switch's floors: the bytes it must move (the union of both adapters'
          cache lines, read and written, plus the index / value / saved
          streams) over the copy bandwidth, and the measured time of the least
          work with the same access pattern;
  model   every linear weight of the TinyLlama-shaped model (generated once and
          cached, 1.03 B parameters at --layers 22): SHiRA switch (adapter.Open +
          Set) against LoRA switch (read the PEFT checkpoint, then one in-place
          BLAS GEMM per weight unfusing the old and fusing the new), with a warm and a cold page cache (posix_fadvise DONTNEED on the
          adapter files before each switch);
  index   .shira index encodings (flat uint32 vs gap-coded) on the model's
          adapter: file size, decode time, Set and switch time.

It prints the tables and, with -o DIR, writes DIR/switch.md, DIR/switch.json,
DIR/` + switchbench.TensorPlotFile + ` and DIR/` + switchbench.ModelPlotFile + `.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := ort.Init(); err != nil {
				return fmt.Errorf("bench switch: %w", err)
			}
			log := cmd.ErrOrStderr()
			if dir == "" {
				cache, err := os.UserCacheDir()
				if err != nil {
					return fmt.Errorf("bench switch: %w", err)
				}
				dir = filepath.Join(cache, "shira-ort", "bench-models")
			}
			var rep switchbench.Report
			var err error
			if rep.LoraKernel, err = lora.BLAS(); err != nil {
				return fmt.Errorf("bench switch: the in-place LoRA baseline needs BLAS: %w", err)
			}
			for _, part := range swList(parts) {
				switch part {
				case "tensor":
					cfg := switchbench.DefaultTensorConfig()
					cfg.Rounds, cfg.Log = rounds, log
					var err error
					if cfg.Dims, err = swInts(dims); err != nil {
						return err
					}
					if cfg.Threads, err = swInts(threads); err != nil {
						return err
					}
					if cfg.Densities, err = swFloats(densities); err != nil {
						return err
					}
					if cfg.DTypes, err = swDTypes(dtypes); err != nil {
						return err
					}
					if rep.Tensors, err = switchbench.RunTensors(cfg); err != nil {
						return err
					}
				case "model", "index":
					cfg := switchbench.ModelConfig{Dir: dir, Work: work, Layers: layers, Density: modelDensity, Rounds: modelRounds, Seed: 1, Log: log}
					var err error
					if cfg.Threads, err = swInts(modelThreads); err != nil {
						return err
					}
					if cfg.DTypes, err = swDTypes(modelDTypes); err != nil {
						return err
					}
					if part == "model" {
						if rep.Models, err = switchbench.RunModel(cfg); err != nil {
							return err
						}
					} else if rep.Index, err = switchbench.RunIndex(cfg); err != nil {
						return err
					}
				default:
					return fmt.Errorf("bench switch: unknown part %q (want tensor, model or index)", part)
				}
			}
			rep.Text(cmd.OutOrStdout())
			if out == "" {
				return nil
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return fmt.Errorf("bench switch: %w", err)
			}
			var md bytes.Buffer
			rep.Markdown(&md)
			if err := atomicfile.WriteFile(filepath.Join(out, "switch.md"), md.Bytes()); err != nil {
				return fmt.Errorf("bench switch: %w", err)
			}
			js, err := json.MarshalIndent(&rep, "", "  ")
			if err != nil {
				return fmt.Errorf("bench switch: %w", err)
			}
			if err := atomicfile.WriteFile(filepath.Join(out, "switch.json"), js); err != nil {
				return fmt.Errorf("bench switch: %w", err)
			}
			return rep.Plots(out)
		},
	}
	f := cmd.Flags()
	f.StringVar(&parts, "parts", "tensor,model,index", "what to measure: tensor, model, index (comma separated)")
	f.StringVar(&dims, "dims", "1024,2048,4096,8192", "per tensor: sizes d of the d×d weights")
	f.StringVar(&densities, "densities", "0.01,0.02", "per tensor: SHiRA densities")
	f.StringVar(&dtypes, "dtypes", "fp32,fp16", "per tensor: weight dtypes")
	f.StringVar(&threads, "threads", "1,2", "per tensor: thread counts")
	f.IntVar(&rounds, "rounds", 7, "per tensor: timed rounds per case")
	f.IntVar(&layers, "layers", 22, "model: blocks of the TinyLlama-shaped model to keep (22 = all, 1.03 B parameters with the LM head)")
	f.StringVar(&modelDTypes, "model-dtypes", "fp32,fp16", "model: weight dtypes")
	f.StringVar(&modelThreads, "model-threads", "2", "model: thread counts")
	f.IntVar(&modelRounds, "model-rounds", 3, "model: timed switches per cache state")
	f.Float64Var(&modelDensity, "model-density", 0.01, "model: SHiRA density")
	f.StringVar(&dir, "dir", "", "where the generated model is cached (default: the user cache dir)")
	f.StringVar(&work, "work", "", "where the adapter files are written (default: a temporary directory)")
	f.StringVarP(&out, "out", "o", "", "write switch.md, switch.json and the PNG plots into this directory")
	return cmd
}

func swList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func swInts(s string) ([]int, error) {
	var out []int
	for _, p := range swList(s) {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bench switch: bad number %q", p)
		}
		out = append(out, n)
	}
	return out, nil
}

func swFloats(s string) ([]float64, error) {
	var out []float64
	for _, p := range swList(s) {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || !(v > 0 && v <= 1) {
			return nil, fmt.Errorf("bench switch: bad density %q", p)
		}
		out = append(out, v)
	}
	return out, nil
}

func swDTypes(s string) ([]tensor.DType, error) {
	var out []tensor.DType
	for _, p := range swList(s) {
		dt, err := tensor.ParseDType(p)
		if err != nil {
			return nil, fmt.Errorf("bench switch: %w", err)
		}
		if !dt.IsFloat() {
			return nil, fmt.Errorf("bench switch: %v is not a float dtype", dt)
		}
		out = append(out, dt)
	}
	return out, nil
}
