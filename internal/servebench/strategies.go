package servebench

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/registry"
	"github.com/shira-ort/shira-ort/sched"
	"github.com/shira-ort/shira-ort/serve"
	"github.com/shira-ort/shira-ort/tensor"
)

// server is one strategy's HTTP server for a model, on loopback.
type server struct {
	strategy string
	info     StrategyInfo
	sess     *ort.Session
	slots    []*ort.Session // shira-slots: every slot's session (sess is the first)
	srv      *serve.Server
	ts       *httptest.Server
	lib      *registry.Library // shira strategies
	lora     *loraCatalog      // ort-lora
	names    *nameCatalog      // base, lora-merged
	merged   *mergedBackend    // lora-merged
	maxBatch int

	mu       sync.Mutex
	switches []time.Duration // every successful switch (the scheduler's, or a slot's)
	calls    int64           // every switch, failed ones included
}

// switchCalls returns the number of switches made so far (the scheduler's
// Stats do not count a slots engine's).
func (s *server) switchCalls() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// catalogStats are a catalog's adapter counts.
type catalogStats struct {
	Registered, Open int
	OpenBytes        int64
}

func (s *server) catalog() catalogStats {
	switch {
	case s.lib != nil:
		st := s.lib.Stats()
		return catalogStats{st.Registered, st.Open, st.OpenBytes}
	case s.lora != nil:
		return s.lora.stats()
	case s.names != nil:
		return catalogStats{Registered: len(s.names.names)}
	}
	return catalogStats{}
}

// switchTimes returns a copy of the switch durations observed so far.
func (s *server) switchTimes() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.switches)
}

// close stops the HTTP server (waiting for requests in flight), drains the
// scheduler and releases the session and the catalog.
func (s *server) close() error {
	if s.ts != nil {
		s.ts.Close()
	}
	var errs []error
	if s.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		errs = append(errs, s.srv.Close(ctx))
		cancel()
	}
	if s.sess != nil && s.slots == nil {
		errs = append(errs, s.sess.Close())
	}
	for _, sess := range s.slots {
		errs = append(errs, sess.Close())
	}
	if s.lib != nil {
		errs = append(errs, s.lib.Close())
	}
	if s.lora != nil {
		errs = append(errs, s.lora.close())
	}
	if s.merged != nil {
		errs = append(errs, s.merged.close(), s.merged.sess.Close())
	}
	return errors.Join(errs...)
}

// discard is the servers' logger: one line per request would cost more
// than some requests.
var discard = slog.New(slog.DiscardHandler)

// openStrategy builds strategy's server for m with the first n adapters
// registered.
func openStrategy(ctx context.Context, cfg *Config, m *model, strategy string, n int) (_ *server, err error) {
	s := &server{strategy: strategy, info: StrategyInfo{Model: m.name, Strategy: strategy}}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	opts := cfg.sessionOptions()
	var eng *serve.Engine
	switch strategy {
	case ShiraPacked, ShiraLive:
		opts.Mode = ort.ModePacked
		opts.PackedTranslationCache = cfg.TranslationCache
		if cfg.TranslationCache <= 0 {
			opts.PackedTranslationCache = -1 // none (0 is ORT's default budget)
		}
		if strategy == ShiraLive {
			opts.Mode = ort.ModeLive
		}
		if s.lib, err = registerAll(ctx, cfg, m, n); err != nil {
			return nil, err
		}
		if s.sess, err = ort.OpenExported(ctx, m.em, opts); err != nil {
			return nil, err
		}
		if s.sess.Mode() != opts.Mode {
			return nil, fmt.Errorf("servebench: %s/%s opened as %v, not %v: %s", m.name, strategy, s.sess.Mode(), opts.Mode, s.sess.FallbackReason())
		}
		eng = serve.ShiraEngine(s.sess, s.lib)
		s.info.Session = fmt.Sprintf("ort.OpenExported, %v mode, exclusive (Set between groups)", s.sess.Mode())
	case ShiraSlots:
		k := cfg.Slots
		if k == 0 {
			k = DefaultSlots[m.name]
		}
		if k == 0 {
			return nil, fmt.Errorf("servebench: shira-slots has no default slot count on the %s model (set Config.Slots)", m.name)
		}
		opts.Mode = ort.ModePacked
		opts.PackedTranslationCache = cfg.TranslationCache
		if cfg.TranslationCache <= 0 {
			opts.PackedTranslationCache = -1
		}
		if s.lib, err = registerAll(ctx, cfg, m, n); err != nil {
			return nil, err
		}
		for range k {
			sess, err := ort.OpenExported(ctx, m.em, opts)
			if err != nil {
				return nil, err
			}
			s.slots = append(s.slots, sess)
			if sess.Mode() != opts.Mode {
				return nil, fmt.Errorf("servebench: %s/%s opened as %v, not %v: %s", m.name, strategy, sess.Mode(), opts.Mode, sess.FallbackReason())
			}
		}
		s.sess = s.slots[0]
		if eng, err = serve.ShiraSlotsEngine(s.slots, s.lib); err != nil {
			return nil, err
		}
		s.info.Session = fmt.Sprintf("ort.OpenExported ×%d (adapter slots), packed mode, not exclusive (a Run's slot is switched when no slot holds its configuration)", k)
	case OrtLoRA:
		if m.name == ModelLLM {
			// External data: ORT resolves it relative to the model's path.
			path, err := m.branchModelFile()
			if err != nil {
				return nil, err
			}
			if s.sess, err = ort.OpenModel(ctx, path, opts); err != nil {
				return nil, err
			}
		} else {
			bm, err := m.branchModel()
			if err != nil {
				return nil, err
			}
			if s.sess, err = ort.OpenModelData(ctx, bm, opts); err != nil {
				return nil, err
			}
		}
		s.lora = newLoraCatalog(m, n, cfg.MaxOpen)
		eng = &serve.Engine{
			Inputs: s.sess.Inputs(), Outputs: s.sess.Outputs(),
			Backend:  &loraBackend{sess: s.sess, cat: s.lora},
			Catalog:  s.lora,
			Platform: "onnxruntime-lora",
		}
		s.info.Session = fmt.Sprintf("ort.OpenModelData of the branch model (r = %s on %d weights), RunLoRA per Run, not exclusive", m.ranks(), len(m.branches))
	case LoraMerged:
		if m.name == ModelLLM {
			return nil, fmt.Errorf("servebench: lora-merged is not run on the 1.03 B model (each switch copies 4 GB of weights into ORT)")
		}
		if s.merged, err = newMergedBackend(ctx, m, opts, cfg.Threads); err != nil {
			return nil, err
		}
		s.names = newNameCatalog(n)
		eng = &serve.Engine{
			Inputs: s.merged.sess.Inputs(), Outputs: s.merged.sess.Outputs(),
			Backend:   s.merged,
			Catalog:   s.names,
			Platform:  "onnxruntime-lora-merged",
			Exclusive: true,
		}
		s.info.Session = fmt.Sprintf("ort.OpenModel of the exported model; a switch merges the group's LoRA (r = %s) into copies of the weights with the in-place BLAS GEMM and passes them as a whole-tensor ORT LoRA adapter on every Run; exclusive", m.ranks())
	case Base:
		if s.sess, err = ort.OpenModel(ctx, m.src, opts); err != nil {
			return nil, err
		}
		s.names = newNameCatalog(n)
		eng = &serve.Engine{
			Inputs: s.sess.Inputs(), Outputs: s.sess.Outputs(),
			Backend:  baseBackend{s.sess},
			Catalog:  s.names,
			Platform: "onnxruntime",
		}
		s.info.Session = "ort.OpenModel of the original model, adapters ignored, not exclusive"
	default:
		return nil, fmt.Errorf("servebench: unknown strategy %q", strategy)
	}
	s.maxBatch = cfg.MaxBatch
	if s.maxBatch > 1 && !serve.Batchable(eng) {
		s.maxBatch = 1
	}
	s.info.Session += fmt.Sprintf(", %d intra-op threads, MaxBatch %d, MaxConcurrent %d, MaxWait %v", cfg.Threads, s.maxBatch, cfg.MaxConcurrent, cfg.MaxWait)
	so := sched.Options{
		MaxWait: cfg.MaxWait, MaxBatch: s.maxBatch, MaxConcurrent: cfg.MaxConcurrent,
		Observer: sched.Observer{Switched: func(_, _ sched.Key, d time.Duration, err error) {
			s.mu.Lock()
			s.calls++
			if err == nil {
				s.switches = append(s.switches, d)
			}
			s.mu.Unlock()
		}},
	}
	if s.srv, err = serve.New(serve.Options{Name: m.name, Engine: eng, Sched: so, Text: m.vocab, Logger: discard}); err != nil {
		return nil, err
	}
	s.ts = httptest.NewServer(s.srv.Handler())
	return s, nil
}

// registerAll returns a library of m's first n SHiRA adapters.
func registerAll(ctx context.Context, cfg *Config, m *model, n int) (*registry.Library, error) {
	lib, err := registry.New(registry.Options{Model: m.em, MaxOpen: cfg.MaxOpen, Logger: discard})
	if err != nil {
		return nil, err
	}
	for i := range n {
		if err := lib.Register(ctx, adapterName(i), m.shiraPath(i)); err != nil {
			lib.Close()
			return nil, err
		}
	}
	return lib, nil
}

// baseBackend runs every request on the original model, whatever adapter
// it names.
type baseBackend struct{ sess *ort.Session }

func (b baseBackend) Switch(context.Context, sched.Key) error {
	return errors.New("servebench: the base backend never switches")
}

func (b baseBackend) Run(ctx context.Context, _ sched.Key, in map[string]*tensor.Tensor) (map[string]*tensor.Tensor, error) {
	return b.sess.Run(ctx, in)
}

// nameCatalog accepts the names of the first n adapters, and has nothing
// to open.
type nameCatalog struct{ names map[string]bool }

func newNameCatalog(n int) *nameCatalog {
	c := &nameCatalog{names: map[string]bool{}}
	for i := range n {
		c.names[adapterName(i)] = true
	}
	return c
}

func (c *nameCatalog) Acquire(_ context.Context, name string) (float32, func(), error) {
	if !c.names[name] {
		return 0, nil, fmt.Errorf("%w %q", serve.ErrUnknownAdapter, name)
	}
	return 1, func() {}, nil
}

func (c *nameCatalog) List() []serve.AdapterInfo {
	var out []serve.AdapterInfo
	for n := range c.names {
		out = append(out, serve.AdapterInfo{Name: n, Source: "none"})
	}
	slices.SortFunc(out, func(a, b serve.AdapterInfo) int { return cmpString(a.Name, b.Name) })
	return out
}

func (c *nameCatalog) Load(context.Context, string, string) error { return serve.ErrLoadDisabled }
func (c *nameCatalog) Unload(string) error                        { return serve.ErrLoadDisabled }

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// loraBackend runs each request with its ORT LoRA adapter active
// (Session.RunLoRA); it never switches.
type loraBackend struct {
	sess *ort.Session
	cat  *loraCatalog
}

func (b *loraBackend) Switch(context.Context, sched.Key) error {
	return errors.New("servebench: the per-run LoRA backend never switches")
}

func (b *loraBackend) Run(ctx context.Context, key sched.Key, in map[string]*tensor.Tensor) (map[string]*tensor.Tensor, error) {
	if key == sched.Base {
		return b.sess.Run(ctx, in)
	}
	entries, err := sched.ParseKey(key)
	if err != nil {
		return nil, err
	}
	if len(entries) != 1 || entries[0].Alpha != 1 {
		return nil, fmt.Errorf("%w: per-run LoRA serves one adapter at alpha 1, not %q", serve.ErrBadRequest, string(key))
	}
	// The requests of this Run hold the adapter acquired: it is loaded.
	a := b.cat.loaded(entries[0].Name)
	if a == nil {
		return nil, fmt.Errorf("servebench: LoRA adapter %q is not loaded", entries[0].Name)
	}
	return b.sess.RunLoRA(ctx, in, a)
}

// loraCatalog offers the .onnx_adapter files of the first n adapters and
// keeps the loaded ones (ort.LoadLoraAdapter) while requests hold them,
// and up to maxOpen unused ones in least-recently-used order; the others
// are released (LoraAdapter.Close).
type loraCatalog struct {
	paths   map[string]string
	maxOpen int

	mu                      sync.Mutex
	entries                 map[string]*loraEntry // loaded
	lru                     *list.List            // unused loaded entries, most recent first
	openBytes               int64
	hits, misses, evictions int64
	closed                  bool
}

type loraEntry struct {
	name  string
	a     *ort.LoraAdapter
	refs  int
	elem  *list.Element // in lru when refs == 0
	bytes int64
}

func newLoraCatalog(m *model, n, maxOpen int) *loraCatalog {
	c := &loraCatalog{paths: map[string]string{}, maxOpen: maxOpen, entries: map[string]*loraEntry{}, lru: list.New()}
	for i := range n {
		c.paths[adapterName(i)] = m.loraPath(i)
	}
	return c
}

// Acquire loads the adapter if needed and holds it until release.
func (c *loraCatalog) Acquire(_ context.Context, name string) (float32, func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, nil, registry.ErrClosed
	}
	path, ok := c.paths[name]
	if !ok {
		return 0, nil, fmt.Errorf("%w %q", serve.ErrUnknownAdapter, name)
	}
	e := c.entries[name]
	if e == nil {
		c.misses++
		a, err := ort.LoadLoraAdapter(path)
		if err != nil {
			return 0, nil, err
		}
		e = &loraEntry{name: name, a: a}
		if fi, err := os.Stat(path); err == nil {
			e.bytes = fi.Size()
		}
		c.entries[name] = e
		c.openBytes += e.bytes
	} else {
		c.hits++
	}
	if e.elem != nil {
		c.lru.Remove(e.elem)
		e.elem = nil
	}
	e.refs++
	var once sync.Once
	return 1, func() { once.Do(func() { c.release(e) }) }, nil
}

func (c *loraCatalog) release(e *loraEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.refs--; e.refs > 0 {
		return
	}
	if c.closed {
		c.unloadLocked(e)
		return
	}
	e.elem = c.lru.PushFront(e)
	for c.lru.Len() > c.maxOpen {
		old := c.lru.Remove(c.lru.Back()).(*loraEntry)
		old.elem = nil
		c.unloadLocked(old)
		c.evictions++
	}
}

func (c *loraCatalog) unloadLocked(e *loraEntry) {
	e.a.Close() // waits for Runs using it (none: nobody holds it)
	delete(c.entries, e.name)
	c.openBytes -= e.bytes
}

// loaded returns the adapter name while it is loaded.
func (c *loraCatalog) loaded(name string) *ort.LoraAdapter {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[name]; e != nil {
		return e.a
	}
	return nil
}

func (c *loraCatalog) stats() catalogStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return catalogStats{Registered: len(c.paths), Open: len(c.entries), OpenBytes: c.openBytes}
}

func (c *loraCatalog) List() []serve.AdapterInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []serve.AdapterInfo
	for n := range c.paths {
		info := serve.AdapterInfo{Name: n, Source: "onnx_adapter"}
		if e := c.entries[n]; e != nil {
			info.Open, info.Bytes = true, e.bytes
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b serve.AdapterInfo) int { return cmpString(a.Name, b.Name) })
	return out
}

func (c *loraCatalog) Load(context.Context, string, string) error { return serve.ErrLoadDisabled }
func (c *loraCatalog) Unload(string) error                        { return serve.ErrLoadDisabled }

// close releases the unused adapters; held ones go with their last
// release.
func (c *loraCatalog) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for c.lru.Len() > 0 {
		e := c.lru.Remove(c.lru.Back()).(*loraEntry)
		e.elem = nil
		c.unloadLocked(e)
	}
	return nil
}
