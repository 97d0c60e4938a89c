package sessionbench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// Config selects what Run measures.
type Config struct {
	Models  []Model
	Batches []int
	// Dir caches the generated models (Dir/<model>/...).
	Dir string
	// Threads is ORT's intra-op thread count (0 = ORT's default).
	Threads int
	// MinTime is the minimum measuring time per latency point (≥ 3 Runs).
	MinTime time.Duration
	// Density is the fraction of every weight the adapters touch.
	Density float64
	// RSS measures peak and steady RSS per mode in child processes.
	RSS bool
	// Variants restricts the sessions compared (default: all of
	// Variants); "plain" is always measured, as the baseline.
	Variants []string
	// Log receives progress lines (nil: none).
	Log io.Writer
}

// Variants are the sessions compared: a plain ORT session of the
// original model, the four modes of ort, and hybrid with
// Options.KeepLiveWeights.
var Variants = []string{"plain", "packed", "live", "baked", "hybrid", HybridKeep}

// HybridKeep is the variant name of a hybrid session with
// Options.KeepLiveWeights.
const HybridKeep = "hybrid-keep"

// isHybrid reports whether variant v is a hybrid session.
func isHybrid(v string) bool { return v == "hybrid" || v == HybridKeep }

// Row is one (model, variant, batch) result. Durations in milliseconds;
// zero means not applicable.
type Row struct {
	Model   Model  `json:"model"`
	Variant string `json:"variant"`
	Batch   int    `json:"batch"`
	// RunMs is the steady-state median Run latency (hybrid: after the
	// background rebuild), Ratio the same over plain's.
	RunMs float64 `json:"run_ms"`
	Ratio float64 `json:"ratio"`
	// OpenMs is the time to open the session.
	OpenMs float64 `json:"open_ms"`
	// SetMs is the switch call itself (Session.Set).
	SetMs float64 `json:"set_ms"`
	// AdaptedMs is from the switch call until a Run (at Batch) returned
	// the adapted outputs.
	AdaptedMs float64 `json:"adapted_ms"`
	// FullSpeedMs (hybrid; packed: AdaptedMs) is from the switch call until Runs are served
	// by the rebuilt baked session.
	FullSpeedMs float64 `json:"full_speed_ms"`
	// PeakRSSMB and SteadyRSSMB are the child process's VmHWM and final
	// VmRSS (MiB); SteadyRatio is SteadyRSSMB over plain's.
	PeakRSSMB   float64 `json:"peak_rss_mb"`
	SteadyRSSMB float64 `json:"steady_rss_mb"`
	SteadyRatio float64 `json:"steady_ratio"`
}

func (c *Config) logf(format string, args ...any) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, format+"\n", args...)
	}
}

func (c *Config) defaults() {
	if len(c.Models) == 0 {
		c.Models = []Model{MLP}
	}
	if len(c.Batches) == 0 {
		c.Batches = []int{1, 16}
	}
	if c.MinTime <= 0 {
		c.MinTime = time.Second
	}
	if c.Density <= 0 {
		c.Density = 0.01
	}
	if len(c.Variants) == 0 {
		c.Variants = Variants
	}
	if !slices.Contains(c.Variants, "plain") {
		c.Variants = append([]string{"plain"}, c.Variants...)
	}
}

// checkVariants reports a variant name that is not one of Variants.
func (c *Config) checkVariants() error {
	for _, v := range c.Variants {
		if !slices.Contains(Variants, v) {
			return fmt.Errorf("sessionbench: unknown variant %q (want %s)", v, strings.Join(Variants, ", "))
		}
	}
	return nil
}

// Run generates the models (cached in Dir) and measures every variant.
func Run(cfg Config) ([]Row, error) {
	cfg.defaults()
	if err := cfg.checkVariants(); err != nil {
		return nil, err
	}
	if err := ort.Init(); err != nil {
		return nil, err
	}
	var rows []Row
	for _, m := range cfg.Models {
		cfg.logf("generating %s in %s", m, cfg.Dir)
		src, exported, err := Generate(m, filepath.Join(cfg.Dir, string(m)))
		if err != nil {
			return nil, err
		}
		adapters := make([]*adapter.Adapter, 2)
		for i := range adapters {
			if adapters[i], err = RandomAdapter(exported, cfg.Density, uint64(i+1)); err != nil {
				return nil, err
			}
		}
		// Open every variant and time the switches, then measure Run latency
		// round-robin across the open sessions (the VM's speed drifts; this
		// keeps the comparison fair), then RSS in child processes.
		sessions := map[string]*ort.Session{}
		byVariant := map[string][]Row{}
		// pairedPlain[v][i]: plain's median measured side by side with v
		// (LLM: the sessions are measured in pairs).
		pairedPlain := map[string][]float64{}
		closeAll := func() {
			for _, s := range sessions {
				s.Close()
			}
		}
		for _, v := range cfg.Variants {
			s, rs, err := openAndSwitch(&cfg, m, v, src, exported, adapters)
			if err != nil {
				closeAll()
				return nil, fmt.Errorf("sessionbench: %s/%s: %w", m, v, err)
			}
			sessions[v], byVariant[v] = s, rs
			if m == LLM && v != "plain" {
				// Four open 4 GB sessions and a rebuild do not fit in 24 GB:
				// plain stays open and each mode is measured against it,
				// round-robin, then closed.
				err = roundRobin(&cfg, m, map[string]*ort.Session{"plain": sessions["plain"], v: s}, byVariant)
				s.Close()
				delete(sessions, v)
				if err != nil {
					closeAll()
					return nil, fmt.Errorf("sessionbench: %s/%s: %w", m, v, err)
				}
				for _, r := range byVariant["plain"] {
					pairedPlain[v] = append(pairedPlain[v], r.RunMs)
				}
			}
		}
		if m != LLM {
			err = roundRobin(&cfg, m, sessions, byVariant)
		} else {
			for i := range byVariant["plain"] { // plain's row: the median of its pairings
				var ps []float64
				for _, v := range cfg.Variants {
					if v == "plain" {
						continue
					}
					ps = append(ps, pairedPlain[v][i])
				}
				slices.Sort(ps)
				byVariant["plain"][i].RunMs = ps[len(ps)/2]
			}
		}
		closeAll()
		if err != nil {
			return nil, fmt.Errorf("sessionbench: %s: %w", m, err)
		}
		baseRSS := 0.0
		for _, v := range cfg.Variants {
			rs := byVariant[v]
			if cfg.RSS {
				peak, steady, err := childRSS(&cfg, m, v, src, exported)
				if err != nil {
					return nil, fmt.Errorf("sessionbench: RSS of %s/%s: %w", m, v, err)
				}
				if v == "plain" {
					baseRSS = steady
				}
				for i := range rs {
					rs[i].PeakRSSMB, rs[i].SteadyRSSMB = peak, steady
					if baseRSS > 0 {
						rs[i].SteadyRatio = steady / baseRSS
					}
				}
			}
			for i := range rs {
				plain := byVariant["plain"][i].RunMs
				if p, ok := pairedPlain[v]; ok {
					plain = p[i]
				}
				rs[i].Ratio = rs[i].RunMs / plain
				cfg.logf("%+v", rs[i])
			}
			rows = append(rows, rs...)
		}
	}
	return rows, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func input(m Model, batch int) map[string]*tensor.Tensor {
	rng := rand.New(rand.NewPCG(uint64(batch), 5))
	v := make([]float32, batch*m.Width())
	for i := range v {
		v[i] = rng.Float32()*2 - 1
	}
	t, _ := tensor.FromFloat32([]int64{int64(batch), int64(m.Width())}, v)
	return map[string]*tensor.Tensor{"X": t}
}

func openVariant(cfg *Config, v, src, exported string) (*ort.Session, error) {
	if v == "plain" {
		return ort.OpenModel(context.Background(), src, &ort.Options{IntraOpThreads: cfg.Threads})
	}
	if v == HybridKeep {
		return ort.Open(context.Background(), exported, &ort.Options{IntraOpThreads: cfg.Threads, Mode: ort.ModeHybrid, KeepLiveWeights: true})
	}
	mode, err := ort.ParseMode(v)
	if err != nil {
		return nil, err
	}
	s, err := ort.Open(context.Background(), exported, &ort.Options{IntraOpThreads: cfg.Threads, Mode: mode})
	if err == nil && s.Mode() != mode {
		s.Close()
		return nil, fmt.Errorf("opened as %v, not %v: %s", s.Mode(), mode, s.FallbackReason())
	}
	return s, err
}

// roundRobin measures the steady-state Run latency of every session:
// rounds of a few Runs per session in turn until MinTime per session, the
// median per (variant, batch).
func roundRobin(cfg *Config, m Model, sessions map[string]*ort.Session, rows map[string][]Row) error {
	for i, b := range cfg.Batches {
		in := input(m, b)
		times := map[string][]float64{}
		var vs []string
		for _, v := range cfg.Variants {
			if sessions[v] != nil {
				vs = append(vs, v)
			}
		}
		for _, v := range vs { // warm up
			if _, err := sessions[v].Run(context.Background(), in); err != nil {
				return err
			}
		}
		cfg.logf("%s: latency, batch %d", m, b)
		start := time.Now()
		for round := 0; round < 3 || time.Since(start) < cfg.MinTime*time.Duration(len(vs)); round++ {
			for _, v := range vs {
				for range 2 {
					t0 := time.Now()
					if _, err := sessions[v].Run(context.Background(), in); err != nil {
						return err
					}
					times[v] = append(times[v], ms(time.Since(t0)))
				}
			}
		}
		for _, v := range vs {
			ds := times[v]
			slices.Sort(ds)
			rows[v][i].RunMs = ds[len(ds)/2]
		}
	}
	return nil
}

// openAndSwitch opens a variant and, for the modes, times a switch per
// batch; the session is left with an adapter active (hybrid: rebaked).
func openAndSwitch(cfg *Config, m Model, v, src, exported string, adapters []*adapter.Adapter) (*ort.Session, []Row, error) {
	cfg.logf("%s/%s: opening", m, v)
	t0 := time.Now()
	s, err := openVariant(cfg, v, src, exported)
	if err != nil {
		return nil, nil, err
	}
	openMs := ms(time.Since(t0))
	rows := make([]Row, len(cfg.Batches))
	for i, b := range cfg.Batches {
		rows[i] = Row{Model: m, Variant: v, Batch: b, OpenMs: openMs}
	}
	if v == "plain" {
		return s, rows, nil
	}
	fail := func(err error) (*ort.Session, []Row, error) { s.Close(); return nil, nil, err }
	for i, b := range cfg.Batches {
		in := input(m, b)
		before, err := s.Run(context.Background(), in)
		if err != nil {
			return fail(err)
		}
		cfg.logf("%s/%s: switch, batch %d", m, v, b)
		t0 := time.Now()
		if err := s.Set(context.Background(), patch.Default(adapters[i%len(adapters)])); err != nil {
			return fail(err)
		}
		rows[i].SetMs = ms(time.Since(t0))
		out, err := s.Run(context.Background(), in)
		if err != nil {
			return fail(err)
		}
		rows[i].AdaptedMs = ms(time.Since(t0))
		if string(out["Y"].Data) == string(before["Y"].Data) {
			return fail(fmt.Errorf("the switch did not change the outputs"))
		}
		if v == "packed" { // Runs are at full speed once the switch returns
			rows[i].FullSpeedMs = rows[i].AdaptedMs
		}
		if isHybrid(v) {
			if err := s.WaitBaked(context.Background()); err != nil {
				return fail(err)
			}
			rows[i].FullSpeedMs = ms(time.Since(t0))
		}
	}
	return s, rows, nil
}
