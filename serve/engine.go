package serve

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/registry"
	"github.com/shira-ort/shira-ort/sched"
	"github.com/shira-ort/shira-ort/tensor"
)

// Catalog is the set of adapters a Server offers by name.
type Catalog interface {
	// Acquire checks that name is a usable adapter (opening and validating
	// it if needed) and holds it until release is called: a request holds
	// its adapters from admission to response, so none is evicted or
	// unmapped under it. alpha is the adapter's default scale.
	Acquire(ctx context.Context, name string) (alpha float32, release func(), err error)
	// List describes the adapters, sorted by name.
	List() []AdapterInfo
	// Load registers the adapter at path under name.
	Load(ctx context.Context, name, path string) error
	// Unload unregisters name; requests already holding it finish with it.
	Unload(name string) error
}

// AdapterInfo describes one adapter of a Catalog.
type AdapterInfo struct {
	Name   string `json:"name"`
	Source string `json:"source"`
	Open   bool   `json:"open"`
	Bytes  int64  `json:"bytes"`
}

// Engine is what a Server serves: a model's inputs and outputs, the
// backend its scheduler runs requests on, and the adapters it offers.
type Engine struct {
	// Inputs and Outputs describe the model (KServe metadata, validation).
	Inputs, Outputs []ort.IOInfo
	// Backend runs requests under an adapter configuration.
	Backend sched.Backend
	// Exclusive: the backend has one active configuration at a time and
	// switches between them (sched.Options.Exclusive).
	Exclusive bool
	// Catalog offers the adapters by name.
	Catalog Catalog
	// Platform names the backend in the model metadata ("onnxruntime-shira").
	Platform string
}

// ShiraEngine serves SHiRA adapters from lib by switching them in sess
// (sess.Set between groups of requests, in the session's mode: packed by
// default). The engine does not own sess or lib.
func ShiraEngine(sess *ort.Session, lib *registry.Library) *Engine {
	cat := newLibraryCatalog(lib)
	return &Engine{
		Inputs:    sess.Inputs(),
		Outputs:   sess.Outputs(),
		Backend:   &shiraBackend{sess: sess, cat: cat},
		Exclusive: true,
		Catalog:   cat,
		Platform:  "onnxruntime-shira-" + sess.Mode().String(),
	}
}

// shiraBackend switches adapters of a registry.Library in an ort.Session.
type shiraBackend struct {
	sess *ort.Session
	cat  *libraryCatalog

	mu   sync.Mutex // the scheduler never overlaps Switch calls; this guards held for Close
	held []func()   // releases the pins of the active configuration
}

// Switch makes key the session's configuration. Its adapters are the ones
// the requests waiting for key pinned at admission (key names them by
// pin: see libraryCatalog), so an adapter unloaded or registered again
// since is still the one they asked for; the backend pins them for as
// long as they are active and releases the previous ones once the session
// let go of them.
func (b *shiraBackend) Switch(ctx context.Context, key sched.Key) error {
	releases, err := setKey(ctx, b.sess, b.cat, key)
	if err != nil {
		return err
	}
	b.mu.Lock()
	old := b.held
	b.held = releases
	b.mu.Unlock()
	releaseAll(old)
	return nil
}

// setKey makes key sess's configuration and returns the releases of the
// pins it took on key's adapters (to call once sess no longer has them
// active). On error sess keeps its previous configuration and nothing is
// pinned.
func setKey(ctx context.Context, sess *ort.Session, cat *libraryCatalog, key sched.Key) ([]func(), error) {
	entries, err := sched.ParseKey(key)
	if err != nil {
		return nil, err
	}
	releases := make([]func(), 0, len(entries))
	cfgs := make([]patch.Config, 0, len(entries))
	for _, e := range entries {
		a, release, err := cat.hold(ctx, e.Name)
		if err != nil {
			releaseAll(releases)
			return nil, err
		}
		releases = append(releases, release)
		cfgs = append(cfgs, patch.Config{Adapter: a, Alpha: e.Alpha})
	}
	if err := sess.Set(ctx, cfgs...); err != nil {
		releaseAll(releases)
		return nil, err
	}
	return releases, nil
}

func releaseAll(rs []func()) {
	for _, r := range rs {
		r()
	}
}

// Run runs inputs on the session, whose configuration the scheduler made
// key's.
func (b *shiraBackend) Run(ctx context.Context, _ sched.Key, inputs map[string]*tensor.Tensor) (map[string]*tensor.Tensor, error) {
	return b.sess.Run(ctx, inputs)
}

// close releases the adapters of the active configuration (after the
// scheduler drained; the session still retains them until it closes).
func (b *shiraBackend) close() {
	b.mu.Lock()
	old := b.held
	b.held = nil
	b.mu.Unlock()
	releaseAll(old)
}

// libraryCatalog is a registry.Library as a Catalog. Every adapter it hands
// out is pinned: acquired from the library once for all its holders
// (requests and the backend's active configuration) and named in
// scheduler keys by "name/N", N numbering the pins (library names have no
// '/'). So a request's key says which adapter it acquired, not just its
// name: the backend switches to exactly that adapter even when the name
// was unloaded, or unloaded and loaded again from another file, while the
// request waited, and requests for the new adapter never share a group
// (or an active configuration) with requests for the old one.
type libraryCatalog struct {
	lib *registry.Library

	mu    sync.Mutex
	seq   uint64
	pins  map[*adapter.Adapter]*pin
	byKey map[string]*pin
}

type pin struct {
	a       *adapter.Adapter
	keyName string
	n       int // holders
}

func newLibraryCatalog(lib *registry.Library) *libraryCatalog {
	return &libraryCatalog{lib: lib, pins: map[*adapter.Adapter]*pin{}, byKey: map[string]*pin{}}
}

// keyedCatalog is implemented by catalogs whose adapters are named in
// scheduler keys by something other than their names.
type keyedCatalog interface {
	acquireKey(ctx context.Context, name string) (keyName string, alpha float32, release func(), err error)
}

var _ keyedCatalog = (*libraryCatalog)(nil)

// acquireKey acquires name from the library (so an unknown or invalid
// adapter is an error, and the library counts the hit or miss) and pins it.
func (c *libraryCatalog) acquireKey(ctx context.Context, name string) (string, float32, func(), error) {
	p, err := c.pinName(ctx, name)
	if err != nil {
		return "", 0, nil, err
	}
	return p.keyName, p.a.DefaultAlpha, c.releaser(p), nil
}

func (c *libraryCatalog) pinName(ctx context.Context, name string) (*pin, error) {
	a, err := c.lib.Acquire(ctx, name)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	p := c.pins[a]
	pinned := p != nil
	if !pinned {
		c.seq++
		p = &pin{a: a, keyName: name + "/" + strconv.FormatUint(c.seq, 10)}
		c.pins[a] = p
		c.byKey[p.keyName] = p
	}
	p.n++
	c.mu.Unlock()
	if pinned {
		c.lib.Release(a) // the pin holds one acquisition for everyone
	}
	return p, nil
}

// hold pins the adapter a key names: a pin's key name, or a plain library
// name (acquired now).
func (c *libraryCatalog) hold(ctx context.Context, keyName string) (*adapter.Adapter, func(), error) {
	c.mu.Lock()
	if p := c.byKey[keyName]; p != nil {
		p.n++
		c.mu.Unlock()
		return p.a, c.releaser(p), nil
	}
	c.mu.Unlock()
	if strings.Contains(keyName, "/") {
		return nil, nil, fmt.Errorf("%w: %s: no request holds this adapter any more", registry.ErrNotFound, keyName)
	}
	p, err := c.pinName(ctx, keyName)
	if err != nil {
		return nil, nil, err
	}
	return p.a, c.releaser(p), nil
}

// releaser returns the function that drops one hold of p, once.
func (c *libraryCatalog) releaser(p *pin) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			p.n--
			last := p.n == 0
			if last {
				delete(c.pins, p.a)
				delete(c.byKey, p.keyName)
			}
			c.mu.Unlock()
			if last {
				c.lib.Release(p.a)
			}
		})
	}
}

func (c *libraryCatalog) Acquire(ctx context.Context, name string) (float32, func(), error) {
	_, alpha, release, err := c.acquireKey(ctx, name)
	return alpha, release, err
}

func (c *libraryCatalog) List() []AdapterInfo {
	names := c.lib.Names()
	out := make([]AdapterInfo, len(names))
	for i, n := range names {
		out[i] = AdapterInfo{Name: n.Name, Source: fmt.Sprint(n.Source), Open: n.Open, Bytes: n.Bytes}
	}
	return out
}

func (c *libraryCatalog) Load(ctx context.Context, name, path string) error {
	return c.lib.Register(ctx, name, path)
}

func (c *libraryCatalog) Unload(name string) error { return c.lib.Unregister(name) }

// closer is implemented by backends that hold resources until the server
// closes.
type closer interface{ close() }

var _ closer = (*shiraBackend)(nil)

// errNotFound / errInvalid classify a Catalog's errors for HTTP status
// codes; registry's errors are matched directly.
func isNotFound(err error) bool {
	return errors.Is(err, registry.ErrNotFound) || errors.Is(err, ErrUnknownAdapter)
}

// Batchable reports whether every input and output of the engine's model
// has a free leading (batch) dimension, which sched.Options.MaxBatch > 1
// requires: requests are then concatenated along it.
func Batchable(e *Engine) bool {
	if len(e.Inputs) == 0 || len(e.Outputs) == 0 {
		return false
	}
	for _, ios := range [][]ort.IOInfo{e.Inputs, e.Outputs} {
		for _, io := range ios {
			if len(io.Shape) == 0 || io.Shape[0] >= 0 {
				return false
			}
		}
	}
	return true
}
