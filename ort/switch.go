package ort

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/shira-ort/shira-ort/patch"
)

// How switching works in baked and hybrid mode. The patcher writes the new
// configuration into the session's private mapping of the weight file; a
// baked engine is built from those bytes (ORT copies them), and once it
// serves Runs the patcher reverts the mapping to the base weights and the
// private pages are dropped (madvise), so in the steady state the weights
// cost memory only once, inside ORT. Session.active remembers the logical
// configuration; Session.patched says whether the mapping holds it.

// rebuildState tracks the background rebuild of a hybrid session.
type rebuildState struct {
	done chan struct{} // closed when the rebuild goroutine exits
	err  error         // of the last rebuild (read after done)

	// start is closed when the rebuild may begin: by the first Run that
	// returns from the live engine after the switch, or by Close (else
	// Options.RebuildDelay passes first).
	start     chan struct{}
	startOnce sync.Once

	// retiring is the baked engine the switch replaced. It is freed when
	// the rebuild starts (its Runs in flight finish first), not during
	// the first Run after the switch, which freeing hundreds of MB of
	// prepacked weights would slow down.
	retiring *engine
}

func newRebuildState() *rebuildState {
	return &rebuildState{done: make(chan struct{}), start: make(chan struct{})}
}

// kick lets the rebuild begin now.
func (rb *rebuildState) kick() { rb.startOnce.Do(func() { close(rb.start) }) }

// waitStart waits until the rebuild may begin (kicked, or delay passed).
func (rb *rebuildState) waitStart(delay time.Duration) {
	if delay <= 0 {
		return
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-rb.start:
	case <-t.C:
	}
}

// switchTo validates next(active) and switches to it as the mode says. The
// session retains the adapters of the configuration it makes active
// (adapter.Adapter.Retain) and lets go of those it replaces, so closing an
// active adapter never unmaps memory a switch or a revert still reads. The
// slice next returns is only read during the call (it may be the caller's):
// the session keeps a copy.
func (s *Session) switchTo(ctx context.Context, next func(active []patch.Config) []patch.Config) error {
	if err := s.switchMu.lockCtx(ctx); err != nil {
		return err
	}
	defer s.switchMu.unlock()
	if s.closed {
		return ErrClosed
	}
	if s.patcher == nil {
		return ErrNoWeights
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	cfgs := next(s.active)
	if err := retainConfigs(cfgs); err != nil {
		return err
	}
	var err error
	switch s.mode {
	case ModeLive:
		err = s.switchLive(cfgs)
	case ModeBaked:
		err = s.switchBaked(ctx, cfgs)
	case ModePacked:
		err = s.switchPacked(cfgs)
	default:
		err = s.switchHybrid(cfgs)
	}
	if err != nil {
		releaseConfigs(cfgs)
		if errors.Is(err, patch.ErrFingerprint) {
			err = fmt.Errorf("%w (Options.SkipFingerprintCheck applies such adapters anyway when names, dtypes and shapes fit)", err)
		}
		return err
	}
	releaseConfigs(s.active)
	s.active = append(s.active[:0], cfgs...)
	clear(s.scratch) // drop adapter pointers the session no longer holds
	return nil
}

// retainConfigs retains the adapter of every config; on error nothing
// stays retained.
func retainConfigs(cfgs []patch.Config) error {
	for k, c := range cfgs {
		if c.Adapter == nil {
			continue // the patcher reports it
		}
		if err := c.Adapter.Retain(); err != nil {
			releaseConfigs(cfgs[:k])
			return fmt.Errorf("ort: %w: %w", patch.ErrConfig, err)
		}
	}
	return nil
}

// releaseConfigs ends retainConfigs.
func releaseConfigs(cfgs []patch.Config) {
	for _, c := range cfgs {
		if c.Adapter != nil {
			c.Adapter.Release()
		}
	}
}

// switchLive patches the weights the live engine reads, between Runs.
// Under switchMu.
func (s *Session) switchLive(cfgs []patch.Config) error {
	if _, err := s.privatize(cfgs); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.patcher.Set(cfgs...)
}

// switchBaked patches, builds a baked engine, swaps it in and drops the
// patched pages. A ctx done before the new engine serves Runs leaves the
// previous configuration active. Under switchMu.
func (s *Session) switchBaked(ctx context.Context, cfgs []patch.Config) error {
	if _, err := s.privatize(cfgs); err != nil {
		return err
	}
	if err := s.patcher.Set(cfgs...); err != nil { // no engine reads the mapping
		return err
	}
	e, err := s.buildBaked()
	if err == nil && ctx.Err() != nil {
		e.retire()
		e, err = nil, ctx.Err()
	}
	if err != nil {
		s.patcher.Revert()
		s.dropWeightPages()
		return err
	}
	s.gen++
	old := s.cur.Swap(e)
	s.patcher.Revert()
	s.dropWeightPages()
	old.retire()
	return nil
}

// switchHybrid applies cfgs live, routes new Runs to the live engine and
// starts (or re-arms) the background rebuild. Under switchMu.
func (s *Session) switchHybrid(cfgs []patch.Config) error {
	validated, err := s.privatize(cfgs)
	if err != nil {
		return err
	}
	if !validated {
		if err := s.patcher.Validate(cfgs...); err != nil {
			return err
		}
	}
	s.mu.Lock() // waits for Runs on the live engine
	err = s.patcher.Set(cfgs...)
	var old *engine
	if err == nil {
		old = s.cur.Swap(s.liveEng)
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	s.patched = true
	s.gen++
	if old == s.liveEng {
		old = nil
	}
	if s.rebuild == nil {
		rb := newRebuildState()
		rb.retiring, old = old, nil
		s.rebuild = rb
		s.pendingRebuild.Store(rb)
		go s.rebuildLoop(rb)
	}
	if old != nil { // not expected: a baked engine serves only when no rebuild is pending
		go old.retire()
	}
	return nil
}

// liveRunReturned starts a pending background rebuild: called after a Run
// on the live engine returned (adapted outputs are out).
func (s *Session) liveRunReturned() {
	if s.pendingRebuild.Load() == nil { // the common case: no write to the shared word
		return
	}
	if rb := s.pendingRebuild.Swap(nil); rb != nil {
		rb.kick()
	}
}

// rebuildLoop builds a baked engine for the latest switch generation and
// swaps it in. A switch made during a build makes that build stale: it is
// discarded and the loop builds again for the newer configuration.
func (s *Session) rebuildLoop(rb *rebuildState) {
	defer close(rb.done)
	rb.waitStart(s.opts.rebuildDelay())
	s.pendingRebuild.CompareAndSwap(rb, nil)
	rb.retiring.retire()
	rb.retiring = nil
	for {
		s.switchMu.lock()
		gen, closed := s.gen, s.closed
		s.switchMu.unlock()
		if closed {
			s.finishRebuild(rb, nil)
			return
		}
		e, err := s.buildBaked() // reads the mapping; a concurrent switch makes the result stale
		s.switchMu.lock()
		if s.gen != gen || s.closed {
			s.switchMu.unlock()
			if e != nil {
				e.retire()
			}
			continue
		}
		if err == nil {
			s.mu.Lock() // waits for Runs still on the live engine
			s.cur.Store(e)
			if !s.opts.KeepLiveWeights {
				s.patcher.Revert()
				s.patched = false
				s.dropWeightPages()
			}
			s.mu.Unlock()
		}
		rb.err = err
		s.rebuild = nil
		s.switchMu.unlock()
		return
	}
}

func (s *Session) finishRebuild(rb *rebuildState, err error) {
	s.switchMu.lock()
	rb.err = err
	if s.rebuild == rb {
		s.rebuild = nil
	}
	s.switchMu.unlock()
}

// WaitBaked waits until Runs are served by a baked, fully optimized ORT
// session: at once in ModeBaked, after the background rebuild in
// ModeHybrid (the error is that rebuild's), never in ModeLive (it returns
// an error). ctx bounds the wait.
func (s *Session) WaitBaked(ctx context.Context) error {
	for {
		s.switchMu.lock()
		mode, rb, closed := s.mode, s.rebuild, s.closed
		s.switchMu.unlock()
		switch {
		case closed:
			return ErrClosed
		case mode == ModeLive || s.patcher == nil:
			return fmt.Errorf("ort: a %v session is never baked", ModeLive)
		case rb == nil:
			if e := s.cur.Load(); e != nil && e.live {
				return fmt.Errorf("ort: the background rebuild failed; Runs stay on the live session")
			}
			return nil
		}
		select {
		case <-rb.done:
			if rb.err != nil {
				return rb.err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Mode returns the session's resolved mode (ModeLive for OpenModel).
func (s *Session) Mode() Mode { return s.mode }

// Baked reports whether new Runs go to a baked (prepacked) ORT session.
func (s *Session) Baked() bool {
	e := s.cur.Load()
	return e != nil && !e.live
}

// privatize makes the session's own copy of every page of the weights
// cfgs write to densely enough (on average at least one element per page)
// that every page is likely to be written anyway: one bulk populate is
// much cheaper than a copy-on-write fault per page under the write lock,
// and costs no extra memory. The bytes do not change, so Runs may go on.
// cfgs are validated first when there is anything to do (validated says
// so), so bad input changes nothing. Under switchMu.
func (s *Session) privatize(cfgs []patch.Config) (validated bool, err error) {
	nnz := map[string]int{}
	for _, c := range cfgs {
		if c.Adapter == nil {
			continue
		}
		for _, t := range c.Adapter.Tensors {
			nnz[t.Name] += t.NNZ()
		}
	}
	if s.file.anon { // anonymous memory: nothing to populate, nothing to unmap
		return false, nil
	}
	page := os.Getpagesize()
	var ws []*weight
	var ranges [][]byte
	for _, w := range s.weights { // in file order
		if n := nnz[w.info.Name]; !w.private && n > 0 && n >= len(w.data)/page {
			ws = append(ws, w)
			ranges = append(ranges, w.data)
		}
	}
	if len(ws) == 0 {
		return false, nil
	}
	if err := s.patcher.Validate(cfgs...); err != nil {
		return true, err
	}
	// Pages of a weight no active adapter touches hold the file's bytes;
	// if Runs mapped them, breaking copy-on-write on each would flush its
	// TLB entry on every core one page at a time (a live session's first
	// switch took ~0.5 s for 268 MB). Unmapping them first (one flush per
	// range; the bytes stay the file's) lets populate fault them in fresh.
	written := map[string]bool{}
	for _, c := range s.patcher.Active() {
		for _, t := range c.Adapter.Tensors {
			written[t.Name] = true
		}
	}
	for _, w := range ws {
		if !written[w.info.Name] {
			unmapPages(w.data)
		}
	}
	s.file.populate(ranges)
	for _, w := range ws {
		w.private = true
	}
	return true, nil
}

// dropWeightPages discards the private weight pages (the mapping must
// hold the base weights): the mapping reads the file again and the pages
// stop counting in the process's memory. Under switchMu.
func (s *Session) dropWeightPages() {
	s.file.dropPages()
	for _, w := range s.weights {
		w.private = false
	}
}
