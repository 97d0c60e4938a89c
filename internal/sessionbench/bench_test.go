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

// TestSessionModes runs the comparison of docs/session-modes.md (what
// `shira-bench sessions` runs) when SHIRA_BENCH_SESSIONS=1, checks that
// every row was measured and logs the table. It is a timed report, not a
// Go benchmark: the harness measures each point itself. The MLP runs by
// default; SHIRA_BENCH_MODELS=mlp,llm adds the 4.1 GB TinyLlama-shaped
// model (minutes, ~16 GB of RAM, ~8 GB of disk in SHIRA_BENCH_DIR, default
// a temporary directory). SHIRA_BENCH_RSS=1 measures RSS in child
// processes.
//
//	SHIRA_BENCH_SESSIONS=1 go test -run SessionModes -v ./internal/sessionbench/
func TestSessionModes(t *testing.T) {
	if os.Getenv("SHIRA_BENCH_SESSIONS") != "1" {
		t.Skip("set SHIRA_BENCH_SESSIONS=1 to run the session-mode comparison (or run `shira-bench sessions`)")
	}
	cfg := Config{Threads: 2, MinTime: time.Second, RSS: os.Getenv("SHIRA_BENCH_RSS") == "1"}
	for _, m := range strings.Split(os.Getenv("SHIRA_BENCH_MODELS"), ",") {
		if m = strings.TrimSpace(m); m != "" {
			cfg.Models = append(cfg.Models, Model(m))
		}
	}
	cfg.Dir = os.Getenv("SHIRA_BENCH_DIR")
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(t.TempDir(), "models")
	}
	if testing.Verbose() {
		cfg.Log = os.Stderr
	}
	rows, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if want := max(1, len(cfg.Models)) * len(Variants) * 2; len(rows) != want { // default batches 1 and 16
		t.Errorf("%d rows, want %d", len(rows), want)
	}
	for _, r := range rows {
		if r.RunMs <= 0 || r.Ratio <= 0 || (cfg.RSS && r.SteadyRSSMB <= 0) {
			t.Errorf("row not measured: %+v", r)
		}
	}
	var out strings.Builder
	Text(&out, rows)
	t.Log("\n" + out.String())
}
