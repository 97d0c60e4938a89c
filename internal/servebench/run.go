package servebench

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"time"

	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/sched"
	"github.com/shira-ort/shira-ort/tensor"
)

// Run prepares every model of cfg, opens the strategies' servers, runs the
// calibration and the load grid, and returns what it measured.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if err := ort.Init(); err != nil {
		return nil, err
	}
	rep := &Report{Started: time.Now(), Config: ReportConfig{
		Models: cfg.Models, Strategies: cfg.Strategies, Adapters: cfg.Adapters, Dists: cfg.Dists, Clients: cfg.Clients,
		Duration: cfg.Duration.String(), Slice: cfg.Slice.String(), Warmup: cfg.Warmup.String(), Threads: cfg.Threads, Verify: cfg.Verify,
		MaxWait: cfg.MaxWait.String(), MaxBatch: cfg.MaxBatch, MaxConcurrent: cfg.MaxConcurrent, MaxOpen: cfg.MaxOpen, Slots: cfg.Slots, Tokens: cfg.Tokens.String(),
		ZipfS: cfg.ZipfS, Spin: cfg.Spin, ORTVersion: ort.Version(),
	}}
	t0, busy0, own0 := time.Now(), systemBusy(), cpuTime()
	defer func() {
		if wall := time.Since(t0); wall > 0 && busy0 > 0 {
			other := (systemBusy() - busy0) - (cpuTime() - own0)
			rep.OtherCPUPercent = max(0, 100*other.Seconds()/wall.Seconds())
			rep.Notes = append(rep.Notes, fmt.Sprintf("other processes on the machine used %.0f %% of a core on average during this run (%d cores)", rep.OtherCPUPercent, runtime.NumCPU()))
		}
	}()
	for _, name := range cfg.Models {
		if err := runModel(ctx, &cfg, name, rep); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func runModel(ctx context.Context, cfg *Config, name string, rep *Report) error {
	counts := cfg.Adapters
	if cfg.Verify && name == ModelLLM {
		return fmt.Errorf("servebench: --verify does not run on %s (each adapter would need a 4.1 GB fused model); the session-modes large test checks it bit for bit", name)
	}
	if cfg.Verify && name == ModelMLP {
		counts = nil
		for _, n := range cfg.Adapters {
			if n <= VerifyMaxAdaptersMLP {
				counts = append(counts, n)
			}
		}
		if len(counts) < len(cfg.Adapters) {
			rep.Notes = append(rep.Notes, fmt.Sprintf("mlp: --verify runs only adapter counts ≤ %d (each adapter verified needs a fused 268 MB model per kind of reference)", VerifyMaxAdaptersMLP))
		}
		if len(counts) == 0 {
			return nil
		}
	}
	m, err := openModel(ctx, cfg, name)
	if err != nil {
		return err
	}
	defer m.close()
	nmax := max(slices.Max(counts), 2) // the calibration switches between two adapters
	shira := slices.Contains(cfg.Strategies, ShiraPacked) || slices.Contains(cfg.Strategies, ShiraLive) || slices.Contains(cfg.Strategies, ShiraSlots)
	lora := slices.Contains(cfg.Strategies, OrtLoRA)
	if err := m.ensureAdapters(ctx, cfg, nmax, shira, lora); err != nil {
		return err
	}
	rep.Notes = append(rep.Notes, fmt.Sprintf("%s: SHiRA adapters: random mask, overwrite, %s, values base + N(0, %g²); LoRA: r = %s, A·B entries with std %.3g (same Frobenius norm of the change); %d registered with every strategy",
		name, densityText(m), m.shiraScale, m.ranks(), m.loraScale, nmax))

	// Open every strategy (the RSS increase of each is its own).
	servers := map[string]*server{}
	defer func() {
		for _, s := range servers {
			s.close()
		}
	}()
	for _, st := range cfg.Strategies {
		cfg.logf("%s/%s: opening", name, st)
		rss0 := rssMB()
		t0 := time.Now()
		s, err := openStrategy(ctx, cfg, m, st, nmax)
		if err != nil {
			return fmt.Errorf("servebench: %s/%s: %w", name, st, err)
		}
		s.info.OpenMs = ms(time.Since(t0))
		s.info.OpenRSSMB = rssMB() - rss0
		servers[st] = s
	}

	var calib []BreakEven
	if cfg.CalibTime > 0 && servers[Base] != nil && servers[OrtLoRA] != nil && servers[ShiraPacked] != nil {
		cfg.logf("%s: calibration (Run costs, switch cost)", name)
		if calib, err = calibrate(ctx, cfg, m, servers); err != nil {
			return err
		}
	} else if cfg.CalibTime > 0 {
		rep.Notes = append(rep.Notes, name+": no break-even calibration (it needs base, ort-lora and shira-packed)")
	}

	var rf *refs
	if cfg.Verify {
		rf = newRefs(m, cfg.sessionOptions())
	}
	var rows []Row
	turn := 0
	for _, n := range counts {
		for _, dist := range cfg.Dists {
			if n == 1 && dist != cfg.Dists[0] {
				continue // one adapter: every distribution is the same
			}
			for _, clients := range cfg.Clients {
				sc := scenario{adapters: n, dist: dist, clients: clients}
				var ss []*server
				for k := range cfg.Strategies {
					ss = append(ss, servers[cfg.Strategies[(k+turn)%len(cfg.Strategies)]])
				}
				turn++
				byStrategy, err := runScenario(ctx, cfg, m, ss, sc, rf)
				if err != nil {
					return fmt.Errorf("servebench: %s, %v: %w", name, sc, err)
				}
				for _, st := range cfg.Strategies {
					row := byStrategy[st]
					cfg.logf("%s/%-12s %-34s %8.1f req/s  p50 %7.2f ms  p99 %7.2f ms  err %d  503 %d  sw/1k %6.1f  group %6.1f  rows/Run %4.1f  RSS %5.0f MiB%s",
						name, st, sc.String(), row.Throughput, row.P50Ms, row.P99Ms, row.Errors, row.Overloaded, row.SwitchesPer1k,
						row.MeanGroup, row.RowsPerRun, row.RSSMB, verifyText(cfg, row))
					rows = append(rows, row)
				}
			}
		}
	}
	if cfg.Verify && m.kserve() && servers[OrtLoRA] != nil {
		var used []int
		for i := range min(nmax, VerifyMaxAdaptersMLP) {
			used = append(used, i)
		}
		d, err := rf.discrimination(ctx, used)
		if err != nil {
			return err
		}
		rep.Notes = append(rep.Notes, fmt.Sprintf("%s: ort-lora tolerance %g·max|output|; the base model's output differs from every LoRA adapter's by at least %.0f× the tolerance, so a response computed without its adapter fails the check", name, loraRelTol, d))
	}

	if cfg.Verify && !m.kserve() {
		d, n, err := rf.textDiscrimination(ctx)
		if err != nil {
			return err
		}
		if n > 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s: verification compares completion texts; %d of %d expected completions (adapters × prompts × kinds used) differ from the base model's, so a response computed with the wrong weights is caught at that rate, not always", name, d, n))
		}
	}
	// Switch costs under load, and the break-even per row.
	for _, st := range cfg.Strategies {
		s := servers[st]
		if sw := s.switchTimes(); len(sw) > 0 {
			s.info.SwitchMedianMs = ms(median(sw))
			s.info.SwitchCount = len(sw)
		}
		rep.Strategies = append(rep.Strategies, s.info)
	}
	swMs := 0.0 // the switch cost per row's g*: under load if measured
	for i := range calib {
		be := &calib[i]
		be.LoadSwitchMs = servers[ShiraPacked].info.SwitchMedianMs
		swMs = be.SwitchMs
		if d := be.LoRAMs - be.BaseMs; d > 0 && be.LoadSwitchMs > 0 {
			be.GStarLoadRequests = float64(be.Batch) * be.LoadSwitchMs / d
			swMs = be.LoadSwitchMs
		}
	}
	for i := range rows {
		if rows[i].Strategy == ShiraPacked && len(calib) > 0 {
			rows[i].BreakEven = breakEvenAt(calib, rows[i].RowsPerRun, swMs)
		}
	}
	rep.Rows = append(rep.Rows, rows...)
	rep.BreakEven = append(rep.BreakEven, calib...)
	return nil
}

func densityText(m *model) string {
	if m.r > 0 {
		return fmt.Sprintf("r·(K+N) entries per weight at r = %d (density %.2f %% on average)", m.r, 100*m.density)
	}
	return fmt.Sprintf("density %g %% of every weight", 100*m.density)
}

func verifyText(cfg *Config, r Row) string {
	if !cfg.Verify {
		return ""
	}
	return fmt.Sprintf("  verified %d wrong %d maxdiff %.3g", r.Verified, r.Wrong, r.MaxDiff)
}

// slices returns the number of slices a scenario's measured time is cut
// into, and their length.
func (c *Config) slices() (int, time.Duration) {
	n := max(1, int((c.Duration+c.Slice-1)/c.Slice))
	return n, c.Duration / time.Duration(n)
}

// runScenario runs one scenario against every server: a warm-up each, then
// the measured time in slices, the servers taking turns within each round
// (the machine's speed drifts, and the cores are shared), every server
// sent the same request sequence.
func runScenario(ctx context.Context, cfg *Config, m *model, ss []*server, sc scenario, rf *refs) (map[string]Row, error) {
	type state struct {
		s         *server
		transport *http.Transport
		o         outcome
		st0       sched.Stats
		sw0       int64         // switches before the measured slices
		rss       float64       // summed RSS change over the slices
		cpu       time.Duration // the process's CPU time during the slices
	}
	states := make([]*state, len(ss))
	for i, s := range ss {
		st := &state{s: s, transport: newTransport()}
		defer st.transport.CloseIdleConnections()
		if cfg.Warmup > 0 {
			w := newRequests(m, sc, sc.seed()^0xa11, s.ts.URL, cfg.ZipfS)
			attack(ctx, w.targeter(), st.transport, sc.clients, cfg.Warmup, false, nil)
		}
		st.st0 = s.srv.Scheduler().Stats()
		st.sw0 = s.switchCalls()
		states[i] = st
	}
	n, slice := cfg.slices()
	for round := range n {
		for k := range states {
			st := states[(k+round)%len(states)]
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			rss0 := rssMB()
			reqs := newRequests(m, sc, sc.seed()+uint64(round)<<40, st.s.ts.URL, cfg.ZipfS)
			cpu0 := cpuTime()
			attack(ctx, reqs.targeter(), st.transport, sc.clients, slice, cfg.Verify, &st.o)
			st.cpu += cpuTime() - cpu0
			st.rss += rssMB() - rss0
		}
	}
	out := map[string]Row{}
	for _, st := range states {
		s := st.s
		row := Row{Model: m.name, Strategy: s.strategy, Adapters: sc.adapters, Dist: sc.dist, Clients: sc.clients}
		st1 := s.srv.Scheduler().Stats()
		row.RSSMB, row.DeltaRSSMB = rssMB(), st.rss
		o := &st.o
		o.metrics.Close()
		met := &o.metrics
		row.Requests = int(met.Requests)
		if o.wall > 0 {
			row.Throughput = float64(o.success) / o.wall.Seconds()
			row.CPUPercent = 100 * st.cpu.Seconds() / o.wall.Seconds()
		}
		row.P50Ms, row.P99Ms, row.MeanMs = ms(met.Latencies.P50), ms(met.Latencies.P99), ms(met.Latencies.Mean)
		row.Errors, row.Overloaded, row.ErrorText = o.errors, o.overloaded, o.errorText

		row.SchedRequests = st1.Submitted - st.st0.Submitted
		row.Switches = s.switchCalls() - st.sw0
		row.Runs = st1.Runs - st.st0.Runs
		row.Rows = st1.Rows - st.st0.Rows
		if row.SchedRequests > 0 {
			row.SwitchesPer1k = 1000 * float64(row.Switches) / float64(row.SchedRequests)
		}
		if row.Switches > 0 {
			row.MeanGroup = float64(row.SchedRequests) / float64(row.Switches)
		}
		if row.Runs > 0 {
			row.RowsPerRun = float64(row.Rows) / float64(row.Runs)
		}
		cs := s.catalog()
		row.Registered, row.Open, row.OpenMB = cs.Registered, cs.Open, float64(cs.OpenBytes)/(1<<20)

		if rf != nil {
			v, err := rf.verify(ctx, s.strategy, o.kept)
			if err != nil {
				return nil, err
			}
			row.Verified, row.Wrong, row.MaxDiff = v.verified, v.wrong, v.maxDiff
			if v.firstWrong != "" {
				cfg.logf("%s/%s %v: first wrong response: %s", m.name, s.strategy, sc, v.firstWrong)
			}
			o.kept = nil
		}
		out[s.strategy] = row
	}
	return out, nil
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func medianF(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

func median(ds []time.Duration) time.Duration {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// calibBatches are the batch sizes the calibration measures.
var calibBatches = []int{1, 16}

// calibRuns is the number of Runs timed per session and round.
const calibRuns = 3

// calibInput returns a batch of b rows: MLP rows of the request pool,
// charlm token ids of a 12-character prompt plus 8 generated characters
// (the middle of a completion).
func calibInput(m *model, b int) (map[string]*tensor.Tensor, error) {
	if m.kserve() {
		width := m.inputs[0].Shape[1]
		data := make([]byte, 0, b*int(width)*4)
		for i := range b {
			data = append(data, m.inputs[i%len(m.inputs)].Data...)
		}
		t, err := tensor.New(tensor.Float32, []int64{int64(b), width}, data)
		return map[string]*tensor.Tensor{m.inName: t}, err
	}
	const seq = 20
	ids := make([]int64, 0, b*seq)
	for i := range b {
		row := m.vocab.Encode(m.prompts[i%len(m.prompts)] + "abcdefgh")
		ids = append(ids, row[:seq]...)
	}
	t, err := tensor.FromInt64([]int64{int64(b), seq}, ids)
	return map[string]*tensor.Tensor{m.inName: t}, err
}

// calibrate measures, before any load, the median Run cost of the base
// session, of the per-run LoRA session with adapter a0000 active and of the
// packed session with a0000 set (round-robin, so the machine's drift falls
// on all three), and the median packed switch between a0000 and a0001. It
// leaves the packed session reverted to the base weights (the scheduler
// switches before its first Run anyway).
func calibrate(ctx context.Context, cfg *Config, m *model, servers map[string]*server) (_ []BreakEven, err error) {
	packed, lora, base := servers[ShiraPacked], servers[OrtLoRA], servers[Base]
	a0, err := packed.lib.Acquire(ctx, adapterName(0))
	if err != nil {
		return nil, err
	}
	defer packed.lib.Release(a0)
	a1, err := packed.lib.Acquire(ctx, adapterName(1))
	if err != nil {
		return nil, err
	}
	defer packed.lib.Release(a1)
	defer func() {
		if rerr := packed.sess.Revert(ctx); err == nil {
			err = rerr
		}
	}()
	if err := packed.sess.Set(ctx, patch.Default(a0)); err != nil {
		return nil, err
	}
	_, releaseLoRA, err := lora.lora.Acquire(ctx, adapterName(0))
	if err != nil {
		return nil, err
	}
	defer releaseLoRA()
	la := lora.lora.loaded(adapterName(0))

	runs := []func(map[string]*tensor.Tensor) error{
		func(in map[string]*tensor.Tensor) error { _, err := base.sess.Run(ctx, in); return err },
		func(in map[string]*tensor.Tensor) error { _, err := lora.sess.RunLoRA(ctx, in, la); return err },
		func(in map[string]*tensor.Tensor) error { _, err := packed.sess.Run(ctx, in); return err },
	}
	var out []BreakEven
	for _, b := range calibBatches {
		in, err := calibInput(m, b)
		if err != nil {
			return nil, err
		}
		for range 2 { // warm up
			for _, r := range runs {
				if err := r(in); err != nil {
					return nil, err
				}
			}
		}
		// Per round, each session's mean of calibRuns Runs after an
		// untimed one: each session has its own intra-op thread pool,
		// whose threads spin for a while after a Run, and the first Run
		// after another session's competes with them for the cores. The
		// costs relative to base are the medians of the per-round
		// differences, which the machine's drift (and other load on shared
		// cores) affects less than the difference of two medians.
		var base, dLoRA, dPacked []float64
		start := time.Now()
		for round := 0; round < 5 || time.Since(start) < cfg.CalibTime; round++ {
			var t [3]float64
			for j := range runs {
				k := (j + round) % len(runs)
				if err := runs[k](in); err != nil {
					return nil, err
				}
				t0 := time.Now()
				for range calibRuns {
					if err := runs[k](in); err != nil {
						return nil, err
					}
				}
				t[k] = ms(time.Since(t0)) / calibRuns
			}
			base = append(base, t[0])
			dLoRA = append(dLoRA, t[1]-t[0])
			dPacked = append(dPacked, t[2]-t[0])
		}
		bm := medianF(base)
		out = append(out, BreakEven{Model: m.name, Batch: b, Rounds: len(base),
			BaseMs: bm, LoRAMs: bm + medianF(dLoRA), PackedMs: bm + medianF(dPacked)})
	}
	var sw []time.Duration
	start := time.Now()
	for i := 0; i < 10 || time.Since(start) < cfg.CalibTime/2; i++ {
		a := a1
		if i%2 == 1 {
			a = a0
		}
		t0 := time.Now()
		if err := packed.sess.Set(ctx, patch.Default(a)); err != nil {
			return nil, err
		}
		sw = append(sw, time.Since(t0))
	}
	swMs := ms(median(sw))
	for i := range out {
		be := &out[i]
		be.SwitchMs = swMs
		if d := be.LoRAMs - be.BaseMs; d > 0 {
			be.GStarRuns = swMs / d
			be.GStarRequests = float64(be.Batch) * be.GStarRuns
		} else {
			be.NoBreakEven = true
		}
		if d := be.LoRAMs - be.PackedMs; d > 0 {
			be.GStarPackedRequests = float64(be.Batch) * swMs / d
		}
	}
	cfg.logf("%s: calibration %+v", m.name, out)
	return out, nil
}

// breakEvenAt returns g* in requests per switch at rows mean rows per Run
// for a switch of switchMs:
// the LoRA overhead per Run interpolated linearly between the calibrated
// batch sizes; -1 when per-run LoRA is not slower there.
func breakEvenAt(calib []BreakEven, rows, switchMs float64) float64 {
	if len(calib) == 0 || rows <= 0 {
		return 0
	}
	lo, hi := calib[0], calib[len(calib)-1]
	d := lo.LoRAMs - lo.BaseMs
	if hi.Batch > lo.Batch {
		f := (min(max(rows, float64(lo.Batch)), float64(hi.Batch)) - float64(lo.Batch)) / float64(hi.Batch-lo.Batch)
		d = (1-f)*(lo.LoRAMs-lo.BaseMs) + f*(hi.LoRAMs-hi.BaseMs)
	}
	if d <= 0 {
		return -1 // per-run LoRA costs nothing here: no group size breaks even
	}
	return rows * switchMs / d
}
