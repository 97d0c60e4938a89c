package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/shira-ort/shira-ort/internal/servebench"
)

// newServeBenchCmd returns `shira-bench serve`: the serving comparison of
// docs/serving.md (issue 15).
func newServeBenchCmd() *cobra.Command {
	var (
		models, strategies, adapters, clients, dists, dir, out string
		tokens                                                 string
		duration, slice, warmup, maxWait, calib                time.Duration
		threads, maxBatch, maxConcurrent, maxOpen, slots       int
		transCache                                             int64
		zipfS                                                  float64
		verify, spin                                           bool
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Compare serving strategies (SHiRA packed/slots/live, ORT per-run LoRA, LoRA merged, base) under HTTP load",
		Long: `serve starts, for each model, one in-process HTTP server per strategy (shira-packed,
shira-slots: several packed sessions as adapter slots, shira-live, ort-lora: ORT's per-run LoRA
at equal parameter count, lora-merged: LoRA merged per group, base: the model without adapters)
on a loopback listener and drives each with the vegeta load generator in a closed loop
over a grid of scenarios: number of adapters, uniform or Zipf choice, number of clients. Models:
mlp (the 67 M MLP, KServe v2 infer requests, batch 1) and charlm (the shipped text generator,
OpenAI-style completions of --tokens greedy tokens, drawn uniformly from a range like 8-24). Adapters are generated once into --dir.

It reports throughput, p50/p99 latency, errors and overload answers, switches per 1 000 scheduler
requests, mean group size, rows per Run, RSS and open adapters, and, from a calibration, the
break-even group size g* = t_switch / (t_lora - t_base). --verify checks every response against
the offline-fused model of its adapter (mlp: adapter counts up to 10 only). It prints a table and,
with --out, writes OUT.md, OUT.json, OUT-throughput.png and OUT-p99.png.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := servebench.Config{
				Models: splitList(models), Strategies: splitList(strategies), Dists: splitList(dists),
				Duration: duration, Slice: slice, Warmup: warmup, Threads: threads, Verify: verify, Dir: dir,
				MaxWait: maxWait, MaxBatch: maxBatch, MaxConcurrent: maxConcurrent, MaxOpen: maxOpen, Slots: slots, TranslationCache: transCache, ZipfS: zipfS,
				CalibTime: calib, Spin: spin, Log: cmd.ErrOrStderr(),
			}
			if warmup == 0 {
				cfg.Warmup = -1 // no warm-up
			}
			if calib == 0 {
				cfg.CalibTime = -1
			}
			var err error
			if cfg.Tokens, err = servebench.ParseTokenRange(tokens); err != nil {
				return err
			}
			if cfg.Adapters, err = intList("adapters", adapters); err != nil {
				return err
			}
			if cfg.Clients, err = intList("clients", clients); err != nil {
				return err
			}
			if cfg.Dir == "" {
				cache, err := os.UserCacheDir()
				if err != nil {
					return fmt.Errorf("serve: %w", err)
				}
				cfg.Dir = filepath.Join(cache, "shira-ort", "bench-models")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := servebench.Run(ctx, cfg)
			if rep != nil && len(rep.Rows) > 0 {
				servebench.Text(cmd.OutOrStdout(), rep)
			}
			if err != nil {
				return err
			}
			if out == "" {
				return nil
			}
			if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
				return fmt.Errorf("serve: %w", err)
			}
			if err := servebench.Write(out, rep); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s.md, %s.json, %s-throughput.png and %s-p99.png\n", out, out, out, out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&models, "models", strings.Join(servebench.Models, ","), "models: mlp, charlm (comma separated)")
	f.StringVar(&strategies, "strategies", strings.Join(servebench.Strategies, ","), "strategies (comma separated)")
	f.StringVar(&adapters, "adapters", "1,10,100,1000", "adapter counts (comma separated)")
	f.StringVar(&clients, "clients", "1,8,32", "concurrent clients (comma separated)")
	f.StringVar(&dists, "dists", "uniform,zipf", "adapter choice: uniform, zipf (comma separated)")
	f.DurationVar(&duration, "duration", 5*time.Second, "measured time per scenario and strategy")
	f.DurationVar(&slice, "slice", time.Second, "the strategies of a scenario take turns in slices of this length")
	f.DurationVar(&warmup, "warmup", time.Second, "unmeasured load before each measurement (0: none)")
	f.DurationVar(&calib, "calib-time", 2*time.Second, "time per Run-cost measurement of the break-even calibration (0: skip it)")
	f.IntVar(&threads, "threads", 2, "ORT intra-op threads")
	f.BoolVar(&verify, "verify", false, "check every response against the offline-fused model of its adapter")
	f.StringVar(&dir, "dir", "", "where generated models and adapters are cached (default: user cache dir/shira-ort/bench-models)")
	f.StringVar(&out, "out", "", "write OUT.md, OUT.json, OUT-throughput.png and OUT-p99.png")
	f.DurationVar(&maxWait, "max-wait", 50*time.Millisecond, "scheduler MaxWait")
	f.IntVar(&maxBatch, "max-batch", 16, "scheduler MaxBatch (rows per Run; 1 where the model has no batch dimension)")
	f.IntVar(&maxConcurrent, "max-concurrent", 1, "scheduler MaxConcurrent (Runs in flight)")
	f.IntVar(&maxOpen, "max-open", 64, "unused adapters each catalog keeps open")
	f.IntVar(&slots, "slots", 0, "shira-slots: packed sessions (adapter slots); 0: 32 on the text generator, 4 on the MLP")
	f.Int64Var(&transCache, "translation-cache", 256<<20, "shira-packed: bytes of translated adapters the session keeps (ort.Options.PackedTranslationCache; 0: translate at every switch)")
	f.Float64Var(&zipfS, "zipf-s", 1.1, "Zipf exponent s")
	f.StringVar(&tokens, "tokens", "16", "charlm: tokens per completion, N or MIN-MAX (each request draws its max_tokens uniformly)")
	f.BoolVar(&spin, "spin", false, "leave ORT's intra-op thread spinning on (off by default: the strategies' sessions share the cores)")
	return cmd
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func intList(flag, s string) ([]int, error) {
	var out []int
	for _, p := range splitList(s) {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("serve: --%s: bad count %q", flag, p)
		}
		out = append(out, n)
	}
	return out, nil
}
