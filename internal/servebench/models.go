package servebench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/demo/charlm"
	"github.com/shira-ort/shira-ort/internal/lorabranch"
	"github.com/shira-ort/shira-ort/internal/sessionbench"
	"github.com/shira-ort/shira-ort/internal/synth"
	"github.com/shira-ort/shira-ort/internal/textgen"
	"github.com/shira-ort/shira-ort/tensor"
)

// The adapters' generation parameters. The SHiRA adapters overwrite the
// entries they touch with base + N(0, shiraScale²) (synth, Overwrite
// semantics); the LoRA adapters' change A·B has entries of standard
// deviation shiraScale·√density, so both change a weight by about the same
// Frobenius norm.
const (
	mlpDensity     = 0.01
	mlpShiraScale  = 0.01 // the MLP's weights are uniform in ±1/√rows: std 0.018 / 0.009
	llmShiraScale  = 0.01
	charlmR        = 1
	charlmScale    = 0.05 // charlm's trained weights have std 0.045-0.11
	poolInputs     = 64   // MLP: the fixed pool of request inputs
	charlmMaxToks  = 16   // tokens generated per completion request
	adapterVersion = "servebench adapters v1"
)

// charlmPrompts is the pool of completion prompts: 12 characters each, so
// the steps of concurrent generations have equal shapes more often (the
// scheduler batches same-adapter steps of equal sequence length).
var charlmPrompts = []string{
	"The program ", "Permission i", "Your system ", "The user is ",
	"This licens ", "Error: the d", "In the end, ", "Copyright (c",
}

// model is a benchmark model prepared for serving: its original and
// exported forms, the adapters' cache, and the request pool.
type model struct {
	name  string
	src   string        // the original (standalone) model
	em    *export.Model // the exported model
	vocab *textgen.Vocab
	// tokens is the range of completion lengths (text generator).
	tokens TokenRange
	dir    string // Dir/<model>/serve-adapters
	tmp    string // scratch: charlm workspace, reference models

	density    float64 // SHiRA density per weight (charlm: the mean, for the record)
	r          int     // synth.Options.R (charlm), else 0
	shiraScale float64
	loraScale  float64
	branches   []lorabranch.Branch // LoRA targets with their ranks

	inName, outName string
	inputs          []*tensor.Tensor // MLP request pool ([1, width] each)
	inputJSON       [][]byte         // MLP: each input's KServe "data" array
	prompts         []string         // charlm request pool

	closers []func() error
}

func (m *model) close() error {
	var errs []error
	for i := len(m.closers) - 1; i >= 0; i-- {
		errs = append(errs, m.closers[i]())
	}
	return errors.Join(errs...)
}

// kserve reports whether requests are KServe infer requests (else
// completions).
func (m *model) kserve() bool { return m.vocab == nil }

// poolSize is the number of distinct request inputs.
func (m *model) poolSize() int {
	if m.kserve() {
		return len(m.inputs)
	}
	return len(m.prompts)
}

func adapterName(i int) string { return fmt.Sprintf("a%04d", i) }

// adapterIndex parses adapterName's output.
func adapterIndex(name string) (int, bool) {
	if len(name) != 5 || name[0] != 'a' {
		return 0, false
	}
	i, err := strconv.Atoi(name[1:])
	return i, err == nil && i >= 0
}

func (m *model) shiraPath(i int) string { return filepath.Join(m.dir, adapterName(i)+".shira") }
func (m *model) loraPath(i int) string  { return filepath.Join(m.dir, adapterName(i)+".onnx_adapter") }

// openModel prepares model name: the MLP is generated (or found) by
// sessionbench.Generate in cfg.Dir/mlp, charlm is written to a temporary
// directory by charlm.Prepare.
func openModel(ctx context.Context, cfg *Config, name string) (_ *model, err error) {
	tmp, err := os.MkdirTemp("", "servebench-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("servebench: %w", err)
	}
	m := &model{name: name, tmp: tmp, dir: filepath.Join(cfg.Dir, name, "serve-adapters")}
	m.closers = append(m.closers, func() error { return os.RemoveAll(tmp) })
	defer func() {
		if err != nil {
			m.close()
		}
	}()
	switch name {
	case ModelMLP, ModelLLM:
		cfg.logf("%s: generating (or reusing) the model in %s", name, filepath.Join(cfg.Dir, name))
		src, exported, err := sessionbench.Generate(sessionbench.Model(name), filepath.Join(cfg.Dir, name))
		if err != nil {
			return nil, err
		}
		m.src = src
		if m.em, err = export.Open(exported); err != nil {
			return nil, fmt.Errorf("servebench: %w", err)
		}
		m.closers = append(m.closers, m.em.Close)
		m.density, m.shiraScale = mlpDensity, mlpShiraScale
		if name == ModelLLM {
			m.shiraScale = llmShiraScale
		}
	case ModelCharLM:
		ws, err := charlm.Prepare(ctx, filepath.Join(tmp, "charlm"))
		if err != nil {
			return nil, err
		}
		m.closers = append(m.closers, ws.Close)
		m.src, m.em = filepath.Join(ws.Dir, "model.onnx"), ws.Model
		if m.vocab, err = textgen.LoadVocab(ws.Vocab); err != nil {
			return nil, err
		}
		m.r, m.shiraScale = charlmR, charlmScale
		m.prompts = charlmPrompts
		m.tokens = cfg.Tokens
	default:
		return nil, fmt.Errorf("servebench: unknown model %q", name)
	}
	if len(m.em.Inputs()) != 1 || len(m.em.Outputs()) != 1 {
		return nil, fmt.Errorf("servebench: %s has %d inputs and %d outputs, want one of each", name, len(m.em.Inputs()), len(m.em.Outputs()))
	}
	m.inName, m.outName = m.em.Inputs()[0].Name, m.em.Outputs()[0].Name
	if err := m.planLoRA(); err != nil {
		return nil, err
	}
	if m.kserve() {
		m.makeInputs()
	}
	return m, nil
}

// planLoRA chooses the LoRA branches: every exposed weight, with the rank
// whose parameter count equals the SHiRA adapters' on that weight.
func (m *model) planLoRA() error {
	src, err := os.ReadFile(m.src)
	if err != nil {
		return fmt.Errorf("servebench: %w", err)
	}
	cands, err := lorabranch.Candidates(src)
	if err != nil {
		return fmt.Errorf("servebench: %s: %w", m.name, err)
	}
	byName := map[string]lorabranch.Branch{}
	for _, c := range cands {
		byName[c.Weight] = c
	}
	var densities []float64
	for _, e := range m.em.Manifest().Tensors {
		c, ok := byName[e.Name]
		if !ok {
			return fmt.Errorf("servebench: %s: exposed weight %q cannot take a LoRA branch", m.name, e.Name)
		}
		if m.r > 0 {
			c.Rank = m.r
			densities = append(densities, float64(m.r*(c.K+c.N))/float64(c.K*c.N))
		} else {
			c.Rank = lorabranch.RankForDensity(c.K, c.N, m.density)
		}
		m.branches = append(m.branches, c)
	}
	if m.r > 0 {
		sum := 0.0
		for _, d := range densities {
			sum += d
		}
		m.density = sum / float64(len(densities))
	}
	m.loraScale = m.shiraScale * math.Sqrt(m.density)
	return nil
}

// ranks describes the LoRA ranks ("8" when all are equal).
func (m *model) ranks() string {
	var rs []int
	for _, b := range m.branches {
		rs = append(rs, b.Rank)
	}
	slices.Sort(rs)
	rs = slices.Compact(rs)
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = strconv.Itoa(r)
	}
	return strings.Join(s, "/")
}

// makeInputs builds the MLP's request pool: poolInputs rows of uniform
// values in [-1, 1) (fixed seed), and each one's JSON data array, written
// in float32's shortest form so the server reads back the same bits.
func (m *model) makeInputs() {
	width := int(m.em.Inputs()[0].Shape[1])
	rng := rand.New(rand.NewPCG(42, 15))
	for range poolInputs {
		v := make([]float32, width)
		for j := range v {
			v[j] = rng.Float32()*2 - 1
		}
		t, _ := tensor.FromFloat32([]int64{1, int64(width)}, v)
		m.inputs = append(m.inputs, t)
		b := []byte{'['}
		for j, f := range v {
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendFloat(b, float64(f), 'g', -1, 32)
		}
		m.inputJSON = append(m.inputJSON, append(b, ']'))
	}
}

// stamp describes the adapters the cache holds: a cache written for
// another model or other parameters is regenerated.
func (m *model) stamp() string {
	var ranks []string
	for _, b := range m.branches {
		ranks = append(ranks, fmt.Sprintf("%s:%d", b.Weight, b.Rank))
	}
	return fmt.Sprintf("%s\nfingerprint %s\nshira mask=rand semantics=overwrite density=%g r=%d scale=%g index=flat-u32\nlora scale=%g ranks=%s\n",
		adapterVersion, m.em.Fingerprint(), m.density, m.r, m.shiraScale, m.loraScale, strings.Join(ranks, ","))
}

// ensureAdapters generates the first n adapters that are missing: the
// .shira files when shira, the .onnx_adapter files when lora. Files are
// written atomically, so an interrupted run leaves complete files only.
func (m *model) ensureAdapters(ctx context.Context, cfg *Config, n int, shira, lora bool) error {
	stampPath := filepath.Join(m.dir, "STAMP")
	want := m.stamp()
	if got, err := os.ReadFile(stampPath); err != nil || string(got) != want {
		if err := os.RemoveAll(m.dir); err != nil {
			return fmt.Errorf("servebench: %w", err)
		}
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return fmt.Errorf("servebench: %w", err)
		}
		if err := os.WriteFile(stampPath, []byte(want), 0o644); err != nil {
			return fmt.Errorf("servebench: %w", err)
		}
	}
	var todo []int
	for i := range n {
		if (shira && !exists(m.shiraPath(i))) || (lora && !exists(m.loraPath(i))) {
			todo = append(todo, i)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	cfg.logf("%s: generating %d adapters into %s", m.name, len(todo), m.dir)
	t0 := time.Now()
	var weights map[string][]byte
	if shira {
		var err error
		if weights, err = m.em.ReadWeights(ctx); err != nil {
			return fmt.Errorf("servebench: %w", err)
		}
	}
	var (
		mu    sync.Mutex
		first error
		next  int
		done  int
		wg    sync.WaitGroup
	)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				mu.Lock()
				if first != nil || next == len(todo) || ctx.Err() != nil {
					if first == nil {
						first = ctx.Err()
					}
					mu.Unlock()
					return
				}
				i := todo[next]
				next++
				mu.Unlock()
				err := m.generate(i, weights, shira, lora)
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				if done++; done%100 == 0 {
					cfg.logf("%s: %d/%d adapters generated (%.0f s)", m.name, done, len(todo), time.Since(t0).Seconds())
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	cfg.logf("%s: %d adapters generated in %.1f s", m.name, len(todo), time.Since(t0).Seconds())
	return nil
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// generate writes adapter i.
func (m *model) generate(i int, weights map[string][]byte, shira, lora bool) error {
	if shira && !exists(m.shiraPath(i)) {
		a, err := synth.New(m.em.Manifest(), weights, synth.Options{
			Name: adapterName(i), Mask: synth.MaskRandom, Density: m.density, R: m.r, Scale: m.shiraScale,
			Seed: uint64(i) + 1, Semantics: adapter.Overwrite,
		})
		if err != nil {
			return fmt.Errorf("servebench: adapter %d: %w", i, err)
		}
		// FlatU32 indices: GapU16 files are only 25-33 % smaller, and
		// are decoded into the heap on open instead of used in place.
		if err := adapter.Write(m.shiraPath(i), a); err != nil {
			return fmt.Errorf("servebench: %w", err)
		}
	}
	if lora && !exists(m.loraPath(i)) {
		ps, err := m.loraParams(i)
		if err != nil {
			return err
		}
		if err := lorabranch.WriteAdapter(m.loraPath(i), ps); err != nil {
			return fmt.Errorf("servebench: %w", err)
		}
	}
	return nil
}

// loraParams returns LoRA adapter i's parameters (deterministic).
func (m *model) loraParams(i int) ([]lorabranch.Params, error) {
	ps, err := lorabranch.Random(m.branches, uint64(i)+1_000_001, m.loraScale)
	if err != nil {
		return nil, fmt.Errorf("servebench: LoRA adapter %d: %w", i, err)
	}
	return ps, nil
}

// branchModelFile writes branchModel beside the original model (whose
// external data it references by relative path) and returns its path.
func (m *model) branchModelFile() (string, error) {
	bm, err := m.branchModel()
	if err != nil {
		return "", err
	}
	path := strings.TrimSuffix(m.src, ".onnx") + ".lora-branches.onnx"
	if err := os.WriteFile(path, bm, 0o644); err != nil {
		return "", fmt.Errorf("servebench: %w", err)
	}
	return path, nil
}

// branchModel returns the original model with a zero LoRA branch on every
// exposed weight.
func (m *model) branchModel() ([]byte, error) {
	src, err := os.ReadFile(m.src)
	if err != nil {
		return nil, fmt.Errorf("servebench: %w", err)
	}
	ts := make([]lorabranch.Target, len(m.branches))
	for i, b := range m.branches {
		ts[i] = b.Target
	}
	out, err := lorabranch.AddBranches(src, ts)
	if err != nil {
		return nil, fmt.Errorf("servebench: %s: %w", m.name, err)
	}
	return out, nil
}
