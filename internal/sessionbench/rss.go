package sessionbench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
)

// ChildEnv is the environment variable that turns a process into an RSS
// measuring child (see ChildMain).
const ChildEnv = "SHIRA_SESSIONBENCH_CHILD"

type childJob struct {
	Model    Model   `json:"model"`
	Variant  string  `json:"variant"`
	Src      string  `json:"src"`
	Exported string  `json:"exported"`
	Threads  int     `json:"threads"`
	Batches  []int   `json:"batches"`
	Density  float64 `json:"density"`
}

type childResult struct {
	PeakKB, RSSKB int64
	Err           string
}

// IsChild reports whether this process was started as an RSS child.
func IsChild() bool { return os.Getenv(ChildEnv) != "" }

// ChildMain runs the RSS child's job and exits: open the variant, Run
// every batch, switch to an adapter (and wait for the rebuild), Run again,
// then print VmHWM and VmRSS as JSON. Call it first thing in main (or
// TestMain) when IsChild.
func ChildMain() {
	var job childJob
	res := childResult{}
	err := json.Unmarshal([]byte(os.Getenv(ChildEnv)), &job)
	if err == nil {
		err = child(job, &res)
	}
	if err != nil {
		res.Err = err.Error()
	}
	if res.PeakKB == 0 {
		res.PeakKB, res.RSSKB = ProcStatusKB("VmHWM"), ProcStatusKB("VmRSS")
	}
	b, _ := json.Marshal(res)
	fmt.Printf("\nRESULT %s\n", b)
	os.Exit(0)
}

func child(job childJob, res *childResult) error {
	cfg := &Config{Threads: job.Threads}
	if err := ort.Init(); err != nil {
		return err
	}
	s, err := openVariant(cfg, job.Variant, job.Src, job.Exported)
	if err != nil {
		return err
	}
	defer s.Close()
	run := func() error {
		for _, b := range job.Batches {
			if _, err := s.Run(context.Background(), input(job.Model, b)); err != nil {
				return err
			}
		}
		return nil
	}
	if err := run(); err != nil {
		return err
	}
	if job.Variant != "plain" {
		a, err := RandomAdapter(job.Exported, job.Density, 1)
		if err != nil {
			return err
		}
		if err := s.Set(context.Background(), patch.Default(a)); err != nil {
			return err
		}
		if err := run(); err != nil {
			return err
		}
		if job.Variant != "live" && job.Variant != "packed" {
			if err := s.WaitBaked(context.Background()); err != nil {
				return err
			}
		}
		time.Sleep(100 * time.Millisecond) // the retired session is freed asynchronously
	}
	if err := run(); err != nil {
		return err
	}
	// The Go heap's free pages go back to the OS as a long-running
	// process's scavenger returns them over time; without this the steady
	// RSS of the modes would include garbage of the switch (translated
	// adapter values, for a packed session) for as long as the GC keeps it.
	debug.FreeOSMemory()
	res.PeakKB, res.RSSKB = ProcStatusKB("VmHWM"), ProcStatusKB("VmRSS") // before Close
	return nil
}

// ProcStatusKB returns a kB field of /proc/self/status ("VmRSS",
// "VmHWM"), 0 where there is none.
func ProcStatusKB(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// childRSS runs the variant in a child process (this executable, which
// must call ChildMain when IsChild) and returns its peak and steady RSS in
// MiB.
func childRSS(cfg *Config, m Model, v, src, exported string) (peak, steady float64, err error) {
	job, _ := json.Marshal(childJob{Model: m, Variant: v, Src: src, Exported: exported, Threads: cfg.Threads,
		Batches: cfg.Batches, Density: cfg.Density})
	exe, err := os.Executable()
	if err != nil {
		return 0, 0, err
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), ChildEnv+"="+string(job))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cfg.logf("%s/%s: measuring RSS in a child process", m, v)
	if err := cmd.Run(); err != nil {
		return 0, 0, fmt.Errorf("child: %w\n%s", err, out.String())
	}
	i := bytes.LastIndex(out.Bytes(), []byte("RESULT "))
	if i < 0 {
		return 0, 0, fmt.Errorf("child printed no result:\n%s", out.String())
	}
	var res childResult
	if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()[i+len("RESULT "):]), &res); err != nil {
		return 0, 0, err
	}
	if res.Err != "" {
		return 0, 0, fmt.Errorf("child: %s", res.Err)
	}
	return float64(res.PeakKB) / 1024, float64(res.RSSKB) / 1024, nil
}
