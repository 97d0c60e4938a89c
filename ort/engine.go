package ort

import (
	"fmt"
	"sync/atomic"

	"github.com/shira-ort/shira-ort/internal/ortshim"
)

// engine is one ORT session serving a Session's Runs. A live engine reads
// the exposed weights in place from the session's mapping (Runs on it hold
// Session.mu shared); a baked engine owns prepacked copies and is
// immutable, so Runs on it only hold a reference.
type engine struct {
	raw  *ortshim.Session // the ORT session
	live bool
	// packed says the session patches this engine's prepacked weights
	// in place (ModePacked): Runs on it hold Session.mu shared, like on
	// a live engine.
	packed bool

	inNames, outNames *ortshim.Names
	feed              []*ortshim.Value // weight values appended to every Run (FeedEachRun)
	providers         []ProviderStatus // the requested execution providers, as appended

	// refs counts the owner's reference plus Runs in flight; the engine is
	// destroyed when it drops to zero, and done is closed then.
	refs atomic.Int64
	done chan struct{}
}

func newEngine(sess *ortshim.Session, live bool) *engine {
	e := &engine{raw: sess, live: live, done: make(chan struct{})}
	e.refs.Store(1)
	return e
}

// tryAcquire takes a reference unless the engine is already being
// destroyed.
func (e *engine) tryAcquire() bool {
	for {
		n := e.refs.Load()
		if n <= 0 {
			return false
		}
		if e.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release drops a reference; the last one destroys the ORT session.
func (e *engine) release() {
	if e.refs.Add(-1) == 0 {
		e.destroy()
	}
}

func (e *engine) destroy() {
	e.raw.Release()
	e.raw = nil
	e.inNames.Free()
	e.outNames.Free()
	close(e.done)
	ortshim.TrimHeap()
}

// retire drops the owner's reference and waits until the Runs still on
// the engine have finished and it is destroyed.
func (e *engine) retire() {
	if e == nil {
		return
	}
	e.release()
	<-e.done
}

// setNames builds the engine's C name arrays: the session's inputs (plus
// the fed weights) and outputs.
func (e *engine) setNames(s *Session) {
	names := make([]string, 0, len(s.inputs)+len(e.feed))
	for _, in := range s.inputs {
		names = append(names, in.Name)
	}
	if len(e.feed) > 0 {
		for _, w := range s.weights {
			names = append(names, w.info.Name)
		}
	}
	outs := make([]string, len(s.outputs))
	for i, o := range s.outputs {
		outs[i] = o.Name
	}
	e.inNames, e.outNames = ortshim.NewNames(names), ortshim.NewNames(outs)
}

// acquire returns the engine a new Run should use and the function that
// ends the Run. Runs on a live or packed engine hold s.mu shared, so a
// switch, which patches the weights under the write lock, never overlaps
// them.
func (s *Session) acquire() (*engine, func(), error) {
	for {
		e := s.cur.Load()
		if e == nil {
			return nil, nil, ErrClosed
		}
		if e.live || e.packed {
			s.mu.RLock()
			if s.cur.Load() != e { // switched to another engine meanwhile
				s.mu.RUnlock()
				continue
			}
			return e, s.mu.RUnlock, nil
		}
		if e.tryAcquire() {
			return e, e.release, nil
		}
	}
}

// newLiveEngine creates the session that reads the exposed weights in
// place (overridable initializers, AddInitializer or fed each Run).
func (s *Session) newLiveEngine(src modelSource, opts *Options) (*engine, error) {
	prepare := func(so *ortshim.SessionOptions) error {
		if s.bakedSrc != nil { // the weight file's other tensors, copied by ORT
			if err := so.AddExternalInitializers(s.bakedSrc.otherNames, s.bakedSrc.otherValues); err != nil {
				return fmt.Errorf("ort: %w", err)
			}
		}
		if s.binding != AddInitializer {
			return nil
		}
		for _, w := range s.weights {
			if err := so.AddInitializer(w.info.Name, w.value); err != nil {
				return fmt.Errorf("ort: %w", err)
			}
		}
		return nil
	}
	sess, st, err := newORTSession(opts, s.disabledOptimizers(), prepare, src.create)
	if err != nil {
		return nil, fmt.Errorf("ort: creating session for %s: %w", src.name, err)
	}
	e := newEngine(sess, len(s.weights) > 0)
	e.providers = st
	if s.binding == FeedEachRun {
		for _, w := range s.weights {
			e.feed = append(e.feed, w.value)
		}
	}
	return e, nil
}

// newORTSession builds session options from opts (execution providers
// included, disable added to the disabled transformers), lets prepare add
// initializers, and creates the ORT session with create. With
// ProviderFallback, a creation failure while a non-CPU provider is active
// is retried with the CPU provider only, and the statuses say so.
func newORTSession(opts *Options, disable []string, prepare func(*ortshim.SessionOptions) error,
	create func(*ortshim.SessionOptions) (*ortshim.Session, error)) (*ortshim.Session, []ProviderStatus, error) {
	try := func(cpuOnly bool) (*ortshim.Session, []ProviderStatus, error) {
		so, st, err := opts.sessionOptions(disable, cpuOnly)
		if err != nil {
			return nil, nil, err
		}
		defer so.Release()
		if prepare != nil {
			if err := prepare(so); err != nil {
				return nil, nil, err
			}
		}
		sess, err := create(so)
		return sess, st, err
	}
	sess, st, err := try(false)
	if err == nil || !opts.ProviderFallback || !anyAccelerator(st) {
		return sess, st, err
	}
	sess2, st2, err2 := try(true)
	if err2 != nil {
		return nil, nil, err // the accelerated attempt's error is the informative one
	}
	for i := range st2 {
		switch {
		case st[i].Active && st[i].Provider.Name != ProviderCPU:
			st2[i].Err = fmt.Errorf("creating the session with it failed, so it was created on CPU: %w", err)
		case !st[i].Active:
			st2[i].Err = st[i].Err
		}
	}
	return sess2, st2, nil
}

// anyAccelerator reports whether a non-CPU provider is active.
func anyAccelerator(st []ProviderStatus) bool {
	for _, p := range st {
		if p.Active && p.Provider.Name != ProviderCPU {
			return true
		}
	}
	return false
}

// Providers reports, for each requested execution provider in priority
// order, whether the ORT session serving Runs has it or why it fell back
// to CPU (Options.ProviderFallback). Empty when only the default CPU
// provider was requested. In hybrid mode it describes the engine serving
// Runs now (live or rebuilt).
func (s *Session) Providers() []ProviderStatus {
	e := s.cur.Load()
	if e == nil {
		return nil
	}
	return append([]ProviderStatus(nil), e.providers...)
}
