package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shira-ort/shira-ort/internal/atomicfile"
	"github.com/shira-ort/shira-ort/internal/sessionbench"
)

func init() {
	// `shira-bench sessions` measures RSS by re-running this executable as a
	// child process; the child never reaches the command line parser.
	if sessionbench.IsChild() {
		sessionbench.ChildMain()
	}
}

// newBenchCmd returns `shira-bench sessions`: the session mode comparison of
// docs/session-modes.md.
func newBenchCmd() *cobra.Command {
	var (
		models, batches, dir, out string
		variants                  []string
		threads                   int
		minTime                   time.Duration
		density                   float64
		rss                       bool
	)
	cmd := &cobra.Command{
		Use:   "sessions",
		Short: "Compare packed, live, baked and hybrid sessions with a plain ORT session",
		Long: `bench generates benchmark models (an 8-layer 1024→4096→1024 MLP, and with
--models mlp,llm a TinyLlama-shaped 4.1 GB model), opens a plain ORT session of
the original model and a packed, live, baked, hybrid and hybrid + KeepLiveWeights
session of the exported one,
and measures steady-state Run latency, time from a switch until adapted outputs,
time until a hybrid session is back at full speed, and peak / steady RSS (in
child processes). It prints a table and writes OUT.md, OUT.json and OUT.png.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := sessionbench.Config{Threads: threads, MinTime: minTime, Density: density, RSS: rss, Dir: dir,
				Variants: variants, Log: cmd.ErrOrStderr()}
			for _, m := range strings.Split(models, ",") {
				if m = strings.TrimSpace(m); m != "" {
					if m != string(sessionbench.MLP) && m != string(sessionbench.LLM) {
						return fmt.Errorf("bench: unknown model %q (want mlp or llm)", m)
					}
					cfg.Models = append(cfg.Models, sessionbench.Model(m))
				}
			}
			for _, b := range strings.Split(batches, ",") {
				var n int
				if _, err := fmt.Sscan(strings.TrimSpace(b), &n); err != nil || n < 1 {
					return fmt.Errorf("bench: bad batch size %q", b)
				}
				cfg.Batches = append(cfg.Batches, n)
			}
			if cfg.Dir == "" {
				cache, err := os.UserCacheDir()
				if err != nil {
					return fmt.Errorf("bench: %w", err)
				}
				cfg.Dir = filepath.Join(cache, "shira-ort", "bench-models")
			}
			rows, err := sessionbench.Run(cfg)
			if err != nil {
				return err
			}
			sessionbench.Text(cmd.OutOrStdout(), rows)
			if out == "" {
				return nil
			}
			if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
				return fmt.Errorf("bench: %w", err)
			}
			var md bytes.Buffer
			sessionbench.Markdown(&md, rows)
			if err := atomicfile.WriteFile(out+".md", md.Bytes()); err != nil {
				return fmt.Errorf("bench: %w", err)
			}
			js, _ := json.MarshalIndent(rows, "", "  ")
			if err := atomicfile.WriteFile(out+".json", js); err != nil {
				return fmt.Errorf("bench: %w", err)
			}
			if err := sessionbench.Plot(out+".png", rows); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s.md, %s.json and %s.png\n", out, out, out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&models, "models", "mlp", "models to benchmark: mlp, llm (comma separated; llm needs ~8 GB of disk and ~16 GB of RAM)")
	f.StringVar(&batches, "batches", "1,16", "batch sizes (comma separated)")
	f.StringVar(&dir, "dir", "", "where generated models are cached (default: user cache dir/shira-ort/bench-models)")
	f.StringVar(&out, "out", "", "write the table to OUT.md and OUT.json and the plot to OUT.png")
	f.IntVar(&threads, "threads", 2, "ORT intra-op threads")
	f.DurationVar(&minTime, "min-time", 2*time.Second, "minimum measuring time per session and batch")
	f.Float64Var(&density, "density", 0.01, "fraction of every weight the benchmark adapters touch")
	f.BoolVar(&rss, "rss", true, "measure peak and steady RSS in child processes")
	f.StringSliceVar(&variants, "variants", nil, "sessions to compare with plain (default all: "+strings.Join(sessionbench.Variants[1:], ",")+")")
	return cmd
}
