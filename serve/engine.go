package serve

import (
	"context"
	"errors"
	"fmt"
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
	return &Engine{
		Inputs:    sess.Inputs(),
		Outputs:   sess.Outputs(),
		Backend:   &shiraBackend{sess: sess, lib: lib},
		Exclusive: true,
		Catalog:   libraryCatalog{lib},
		Platform:  "onnxruntime-shira-" + sess.Mode().String(),
	}
}

// shiraBackend switches adapters of a registry.Library in an ort.Session.
type shiraBackend struct {
	sess *ort.Session
	lib  *registry.Library

	mu   sync.Mutex         // the scheduler never overlaps Switch calls; this guards held for Close
	held []*adapter.Adapter // acquired from lib for the active configuration
}

// Switch makes key the session's configuration. The adapters are acquired
// from the library for as long as they are active (the requests asking
// for them acquired them too, so these are hits), and the previous ones
// released once the session let go of them.
func (b *shiraBackend) Switch(ctx context.Context, key sched.Key) error {
	entries, err := sched.ParseKey(key)
	if err != nil {
		return err
	}
	acquired := make([]*adapter.Adapter, 0, len(entries))
	cfgs := make([]patch.Config, 0, len(entries))
	for _, e := range entries {
		a, err := b.lib.Acquire(ctx, e.Name)
		if err != nil {
			b.release(acquired)
			return err
		}
		acquired = append(acquired, a)
		cfgs = append(cfgs, patch.Config{Adapter: a, Alpha: e.Alpha})
	}
	if err := b.sess.Set(ctx, cfgs...); err != nil {
		b.release(acquired)
		return err
	}
	b.mu.Lock()
	old := b.held
	b.held = acquired
	b.mu.Unlock()
	b.release(old)
	return nil
}

func (b *shiraBackend) release(as []*adapter.Adapter) {
	for _, a := range as {
		b.lib.Release(a)
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
	b.release(old)
}

// libraryCatalog is a registry.Library as a Catalog.
type libraryCatalog struct{ lib *registry.Library }

func (c libraryCatalog) Acquire(ctx context.Context, name string) (float32, func(), error) {
	a, err := c.lib.Acquire(ctx, name)
	if err != nil {
		return 0, nil, err
	}
	var once sync.Once
	return a.DefaultAlpha, func() { once.Do(func() { c.lib.Release(a) }) }, nil
}

func (c libraryCatalog) List() []AdapterInfo {
	names := c.lib.Names()
	out := make([]AdapterInfo, len(names))
	for i, n := range names {
		out[i] = AdapterInfo{Name: n.Name, Source: fmt.Sprint(n.Source), Open: n.Open, Bytes: n.Bytes}
	}
	return out
}

func (c libraryCatalog) Load(ctx context.Context, name, path string) error {
	return c.lib.Register(ctx, name, path)
}

func (c libraryCatalog) Unload(name string) error { return c.lib.Unregister(name) }

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
