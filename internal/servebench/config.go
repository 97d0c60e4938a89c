package servebench

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/registry"
)

// The models.
const (
	ModelMLP    = "mlp"
	ModelCharLM = "charlm"
	// ModelLLM is sessionbench's TinyLlama-shaped 1.03 B-parameter model
	// (4.1 GB of external data; KServe requests like the MLP's, not
	// verified: each adapter would need a 4.1 GB fused model).
	ModelLLM = "llm"
)

// Models lists the models Run knows.
var Models = []string{ModelMLP, ModelCharLM, ModelLLM}

// The strategies.
const (
	ShiraPacked = "shira-packed"
	ShiraLive   = "shira-live"
	ShiraSlots  = "shira-slots"
	OrtLoRA     = "ort-lora"
	LoraMerged  = "lora-merged"
	Base        = "base"
)

// Strategies lists the strategies Run knows, in the order they are reported.
var Strategies = []string{ShiraPacked, ShiraSlots, ShiraLive, OrtLoRA, LoraMerged, Base}

// The adapter choice distributions.
const (
	Uniform = "uniform"
	Zipf    = "zipf"
)

// Dists lists the distributions Run knows.
var Dists = []string{Uniform, Zipf}

// VerifyMaxAdaptersMLP is the largest adapter count the MLP runs with
// Config.Verify: each adapter verified needs a fused 268 MB model per kind
// of reference (SHiRA fused, run prepacked and unpacked; LoRA merged).
const VerifyMaxAdaptersMLP = 10

// TokenRange is a range of completion lengths, in tokens.
type TokenRange struct{ Min, Max int }

// String writes the range as ParseTokenRange reads it.
func (t TokenRange) String() string {
	if t.Min == t.Max {
		return strconv.Itoa(t.Min)
	}
	return fmt.Sprintf("%d-%d", t.Min, t.Max)
}

// ParseTokenRange reads "N" or "MIN-MAX".
func ParseTokenRange(s string) (TokenRange, error) {
	lo, hi, ok := strings.Cut(s, "-")
	if !ok {
		hi = lo
	}
	a, err1 := strconv.Atoi(lo)
	b, err2 := strconv.Atoi(hi)
	if err1 != nil || err2 != nil || a < 1 || b < a {
		return TokenRange{}, fmt.Errorf("servebench: token range %q: want N or MIN-MAX with 1 ≤ MIN ≤ MAX", s)
	}
	return TokenRange{a, b}, nil
}

// DefaultSlots is shira-slots' session count per model when Config.Slots
// is 0: as many as the most clients measured on the text generator (0.64 M
// parameters: each completion in flight can keep its configuration in a
// slot), 4 on the MLP (268 MB of weights per slot). The 1.03 B model has
// none (4.1 GB per slot).
var DefaultSlots = map[string]int{ModelCharLM: 32, ModelMLP: 4}

// Config selects what Run measures. Zero values mean the defaults noted.
type Config struct {
	Models     []string // default both
	Strategies []string // default all
	Adapters   []int    // adapter counts; default 1, 10, 100, 1000
	Dists      []string // default uniform, zipf
	Clients    []int    // concurrent clients; default 1, 8, 32
	// Duration is the measured time per scenario and strategy (default
	// 5s), Warmup the unmeasured load before it (default 1s).
	Duration, Warmup time.Duration
	// Slice cuts Duration into slices that the strategies of a scenario
	// take in turns (default 1s), so slow drifts and other load on the
	// machine fall on all of them alike.
	Slice time.Duration
	// Threads is ORT's intra-op thread count (default 2).
	Threads int
	// Verify checks every response against the offline-fused output of its
	// configuration (see the package documentation).
	Verify bool
	// Dir caches the generated MLP and the adapters (Dir/<model>/...);
	// required.
	Dir string

	// MaxWait, MaxBatch and MaxConcurrent are the scheduler's options
	// (sched.Options) for every strategy; defaults 50ms, 16 (1 where the
	// model has no free batch dimension) and 1.
	MaxWait       time.Duration
	MaxBatch      int
	MaxConcurrent int
	// MaxOpen is the number of unused adapters a catalog keeps open
	// (registry.Options.MaxOpen; the LoRA catalog's LRU); default
	// registry.DefaultMaxOpen.
	MaxOpen int
	// TranslationCache is shira-packed's ort.Options.PackedTranslationCache
	// (0: every switch translates).
	TranslationCache int64
	// Slots is the number of packed sessions of shira-slots
	// (serve.ShiraSlotsEngine); default DefaultSlots for the model.
	Slots int
	// Tokens is the range of max_tokens of the text generator's
	// completions, each drawn uniformly from it (default 16–16).
	Tokens TokenRange
	// ZipfS is the Zipf exponent s (default 1.1).
	ZipfS float64
	// CalibTime bounds each Run-cost measurement of the calibration
	// (default 2s); negative skips the calibration.
	CalibTime time.Duration

	// Spin leaves ORT's intra-op thread spinning on (ORT's default). By
	// default every session of a run has it off
	// (session.intra_op.allow_spinning = 0): the strategies' sessions are
	// open side by side on the same cores, and a pool that spins after its
	// Runs slows the next Runs of another session (measured here: the MLP's
	// batch-1 Run at 15 ms instead of 8 ms in the calibration's
	// round-robin), while under load, one session at a time, turning it off
	// changed throughput by less than the run-to-run noise.
	Spin bool

	// Log receives progress lines (nil: none).
	Log io.Writer
}

// sessionOptions are the options of every session of a run.
func (c *Config) sessionOptions() *ort.Options {
	o := &ort.Options{IntraOpThreads: c.Threads}
	if !c.Spin {
		o.SessionConfig = map[string]string{"session.intra_op.allow_spinning": "0"}
	}
	return o
}

func (c *Config) logf(format string, args ...any) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, format+"\n", args...)
	}
}

func (c *Config) defaults() error {
	if len(c.Models) == 0 {
		c.Models = Models
	}
	if len(c.Strategies) == 0 {
		c.Strategies = Strategies
	}
	if len(c.Adapters) == 0 {
		c.Adapters = []int{1, 10, 100, 1000}
	}
	if len(c.Dists) == 0 {
		c.Dists = Dists
	}
	if len(c.Clients) == 0 {
		c.Clients = []int{1, 8, 32}
	}
	if c.Duration <= 0 {
		c.Duration = 5 * time.Second
	}
	if c.Warmup < 0 {
		c.Warmup = 0
	} else if c.Warmup == 0 {
		c.Warmup = time.Second
	}
	if c.Slice <= 0 {
		c.Slice = time.Second
	}
	if c.Threads <= 0 {
		c.Threads = 2
	}
	if c.MaxWait <= 0 {
		c.MaxWait = 50 * time.Millisecond
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 16
	}
	if c.Slots < 0 {
		c.Slots = 0
	}
	if c.Tokens == (TokenRange{}) {
		c.Tokens = TokenRange{charlmMaxToks, charlmMaxToks}
	}
	if c.Tokens.Min < 1 || c.Tokens.Max < c.Tokens.Min {
		return fmt.Errorf("servebench: token range %v: want 1 ≤ min ≤ max", c.Tokens)
	}
	if c.MaxConcurrent <= 0 {
		c.MaxConcurrent = 1
	}
	if c.MaxOpen <= 0 {
		c.MaxOpen = registry.DefaultMaxOpen
	}
	if c.ZipfS == 0 {
		c.ZipfS = 1.1
	}
	if c.CalibTime == 0 {
		c.CalibTime = 2 * time.Second
	}
	if c.Dir == "" {
		return fmt.Errorf("servebench: Config.Dir is required")
	}
	check := func(what string, got, known []string) error {
		for _, g := range got {
			if !slices.Contains(known, g) {
				return fmt.Errorf("servebench: unknown %s %q (want %s)", what, g, strings.Join(known, ", "))
			}
		}
		return nil
	}
	if err := check("model", c.Models, Models); err != nil {
		return err
	}
	if err := check("strategy", c.Strategies, Strategies); err != nil {
		return err
	}
	if err := check("distribution", c.Dists, Dists); err != nil {
		return err
	}
	for _, n := range c.Adapters {
		if n < 1 || n > 9999 {
			return fmt.Errorf("servebench: adapter count %d out of range [1, 9999]", n)
		}
	}
	for _, n := range c.Clients {
		if n < 1 {
			return fmt.Errorf("servebench: client count %d is not positive", n)
		}
	}
	if c.ZipfS <= 1 {
		return fmt.Errorf("servebench: Zipf exponent %v must be > 1", c.ZipfS)
	}
	// Report strategies in the canonical order.
	var ordered []string
	for _, s := range Strategies {
		if slices.Contains(c.Strategies, s) {
			ordered = append(ordered, s)
		}
	}
	c.Strategies = ordered
	c.Adapters = sortedUnique(c.Adapters)
	c.Clients = sortedUnique(c.Clients)
	return nil
}

func sortedUnique(v []int) []int {
	v = slices.Clone(v)
	slices.Sort(v)
	return slices.Compact(v)
}

// Row is one (model, strategy, scenario) result.
type Row struct {
	Model    string `json:"model"`
	Strategy string `json:"strategy"`
	Adapters int    `json:"adapters"`
	Dist     string `json:"dist"`
	Clients  int    `json:"clients"`

	// Requests is the number of HTTP requests answered in the measured
	// window; Throughput the successful ones per second (vegeta).
	Requests   int     `json:"requests"`
	Throughput float64 `json:"throughput_rps"`
	// Latencies in milliseconds (vegeta's estimates).
	P50Ms  float64 `json:"p50_ms"`
	P99Ms  float64 `json:"p99_ms"`
	MeanMs float64 `json:"mean_ms"`
	// CPUPercent is the process's CPU time over the measured wall time
	// (100 per fully busy core; the load generator included).
	CPUPercent float64 `json:"cpu_percent"`
	// Errors counts non-2xx answers other than 503 and transport errors;
	// Overloaded counts 503 answers (deliberate back-pressure).
	Errors     int      `json:"errors"`
	Overloaded int      `json:"overloaded"`
	ErrorText  []string `json:"error_text,omitempty"`

	// Scheduler Stats delta over the measured window. SchedRequests counts
	// the scheduler's requests (one per HTTP request for the MLP, one per
	// generated token for charlm).
	SchedRequests int64 `json:"sched_requests"`
	Switches      int64 `json:"switches"`
	Runs          int64 `json:"runs"`
	Rows          int64 `json:"rows"`
	// SwitchesPer1k is Switches per 1 000 scheduler requests; MeanGroup the
	// scheduler requests per switch (0: no switch); RowsPerRun the mean rows
	// of a Run.
	SwitchesPer1k float64 `json:"switches_per_1k"`
	MeanGroup     float64 `json:"mean_group"`
	RowsPerRun    float64 `json:"rows_per_run"`
	// BreakEven is g* at this row's mean rows per Run, in scheduler
	// requests per switch, with the median switch under load (else the
	// calibration's) (shira-packed with a calibration; 0 otherwise, -1
	// when per-run LoRA costs no more than the base model there).
	BreakEven float64 `json:"break_even_group,omitempty"`

	// RSSMB is the process's VmRSS after the run (MiB, after the Go heap
	// returned its free pages); DeltaRSSMB its change over the run.
	RSSMB      float64 `json:"rss_mb"`
	DeltaRSSMB float64 `json:"delta_rss_mb"`
	// Registered and Open are the catalog's adapter counts after the run,
	// OpenMB the bytes of the open ones.
	Registered int     `json:"registered"`
	Open       int     `json:"open"`
	OpenMB     float64 `json:"open_mb"`

	// Verification (Config.Verify): responses checked, responses whose
	// output differs from the expected one (beyond the tolerance for
	// ort-lora) or that could not be matched, and the largest absolute
	// difference of a float output.
	Verified int     `json:"verified"`
	Wrong    int     `json:"wrong"`
	MaxDiff  float64 `json:"max_diff"`
}

// StrategyInfo describes a strategy's server as opened for a model.
type StrategyInfo struct {
	Model    string `json:"model"`
	Strategy string `json:"strategy"`
	// Session describes the session (mode, rank, batching).
	Session string  `json:"session"`
	OpenMs  float64 `json:"open_ms"`
	// OpenRSSMB is the process RSS increase when the strategy was opened.
	OpenRSSMB float64 `json:"open_rss_mb"`
	// SwitchMedianMs is the median Switch time the scheduler observed over
	// all scenarios (exclusive strategies).
	SwitchMedianMs float64 `json:"switch_median_ms,omitempty"`
	SwitchCount    int     `json:"switch_count,omitempty"`
}

// BreakEven is a model's calibration at one batch size: median Run costs
// and switch cost (ms), and the break-even group sizes.
type BreakEven struct {
	Model string `json:"model"`
	Batch int    `json:"batch"`
	// BaseMs is the median Run time of the base session; LoRAMs and
	// PackedMs add to it the median difference, per round of a
	// round-robin, of the per-run LoRA session with an adapter active and
	// of the packed session with an adapter set.
	Rounds   int     `json:"rounds"`
	BaseMs   float64 `json:"base_ms"`
	LoRAMs   float64 `json:"lora_ms"`
	PackedMs float64 `json:"packed_ms"`
	// SwitchMs is the median Session.Set of the packed session between
	// two adapters (calibration); LoadSwitchMs the median switch the
	// scheduler observed under load (0 if none).
	SwitchMs     float64 `json:"switch_ms"`
	LoadSwitchMs float64 `json:"load_switch_ms"`
	// GStarRuns = SwitchMs / (LoRAMs − BaseMs): Runs per switch at which
	// SHiRA's switches cost what per-run LoRA's branches cost;
	// GStarRequests = Batch · GStarRuns. Infinite (reported as 0 with
	// NoBreakEven) when per-run LoRA is not slower than base.
	GStarRuns     float64 `json:"g_star_runs"`
	GStarRequests float64 `json:"g_star_requests"`
	// GStarLoadRequests uses LoadSwitchMs; GStarPackedRequests uses
	// PackedMs instead of BaseMs.
	GStarLoadRequests   float64 `json:"g_star_load_requests"`
	GStarPackedRequests float64 `json:"g_star_packed_requests"`
	NoBreakEven         bool    `json:"no_break_even,omitempty"`
}

// Report is everything Run measured.
type Report struct {
	Started    time.Time      `json:"started"`
	Config     ReportConfig   `json:"config"`
	Rows       []Row          `json:"rows"`
	Strategies []StrategyInfo `json:"strategies"`
	BreakEven  []BreakEven    `json:"break_even"`
	Notes      []string       `json:"notes"`
	// OtherCPUPercent is the CPU time other processes used during the run,
	// per wall second (100 = one core).
	OtherCPUPercent float64 `json:"other_cpu_percent"`
}

// ReportConfig is the part of Config a report records.
type ReportConfig struct {
	Models        []string `json:"models"`
	Strategies    []string `json:"strategies"`
	Adapters      []int    `json:"adapters"`
	Dists         []string `json:"dists"`
	Clients       []int    `json:"clients"`
	Duration      string   `json:"duration"`
	Slice         string   `json:"slice"`
	Warmup        string   `json:"warmup"`
	Threads       int      `json:"threads"`
	Verify        bool     `json:"verify"`
	MaxWait       string   `json:"max_wait"`
	MaxBatch      int      `json:"max_batch"`
	MaxConcurrent int      `json:"max_concurrent"`
	MaxOpen       int      `json:"max_open"`
	Slots         int      `json:"slots,omitempty"`
	Tokens        string   `json:"tokens"`
	ZipfS         float64  `json:"zipf_s"`
	Spin          bool     `json:"spin"`
	ORTVersion    string   `json:"ort_version"`
}
