package sessionbench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if IsChild() {
		ChildMain()
	}
	os.Exit(m.Run())
}

// BenchmarkSessionModes runs the comparison of docs/session-modes.md and
// reports each (model, variant, batch) as a sub-benchmark with custom
// metrics. The MLP runs by default; SHIRA_BENCH_MODELS=mlp,llm adds the
// 4.1 GB TinyLlama-shaped model (minutes, ~16 GB of RAM, ~8 GB of disk in
// SHIRA_BENCH_DIR, default a temporary directory). SHIRA_BENCH_RSS=1
// measures RSS in child processes.
//
//	go test -run '^$' -bench SessionModes -benchtime 1x ./internal/sessionbench/
func BenchmarkSessionModes(b *testing.B) {
	cfg := Config{Threads: 2, MinTime: time.Second, RSS: os.Getenv("SHIRA_BENCH_RSS") == "1"}
	for _, m := range strings.Split(os.Getenv("SHIRA_BENCH_MODELS"), ",") {
		if m = strings.TrimSpace(m); m != "" {
			cfg.Models = append(cfg.Models, Model(m))
		}
	}
	cfg.Dir = os.Getenv("SHIRA_BENCH_DIR")
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(b.TempDir(), "models")
	}
	if testing.Verbose() {
		cfg.Log = os.Stderr
	}
	rows, err := Run(cfg)
	if err != nil {
		b.Fatal(err)
	}
	for _, r := range rows {
		b.Run(string(r.Model)+"/"+r.Variant+"/batch="+itoa(r.Batch), func(b *testing.B) {
			b.ReportMetric(r.RunMs, "run-ms")
			b.ReportMetric(r.Ratio, "x-plain")
			if r.AdaptedMs > 0 {
				b.ReportMetric(r.AdaptedMs, "adapted-ms")
			}
			if r.FullSpeedMs > 0 {
				b.ReportMetric(r.FullSpeedMs, "full-speed-ms")
			}
			if r.SteadyRSSMB > 0 {
				b.ReportMetric(r.PeakRSSMB, "peak-MiB")
				b.ReportMetric(r.SteadyRSSMB, "steady-MiB")
			}
		})
	}
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}
