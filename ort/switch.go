package ort

import (
	"context"
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

// switchTo validates next(active) and switches to it as the mode says.
func (s *Session) switchTo(next func(active []patch.Config) []patch.Config) error {
	s.switchMu.Lock()
	defer s.switchMu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.patcher == nil {
		return ErrNoWeights
	}
	switch s.mode {
	case ModeLive:
		cfgs := next(s.patcher.Active())
		if _, err := s.privatize(cfgs); err != nil {
			return err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.patcher.Set(cfgs...)
	case ModeBaked:
		return s.switchBaked(next(s.active))
	default:
		return s.switchHybrid(next(s.active))
	}
}

// switchBaked patches, builds a baked engine, swaps it in and drops the
// patched pages. Under switchMu.
func (s *Session) switchBaked(cfgs []patch.Config) error {
	if _, err := s.privatize(cfgs); err != nil {
		return err
	}
	if err := s.patcher.Set(cfgs...); err != nil { // no engine reads the mapping
		return err
	}
	e, err := s.buildBaked()
	if err != nil {
		s.patcher.Revert()
		s.dropWeightPages()
		return err
	}
	s.gen++
	old := s.cur.Swap(e)
	s.active = cfgs
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
	s.active, s.patched = cfgs, true
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
		s.switchMu.Lock()
		gen, closed := s.gen, s.closed
		s.switchMu.Unlock()
		if closed {
			s.finishRebuild(rb, nil)
			return
		}
		e, err := s.buildBaked() // reads the mapping; a concurrent switch makes the result stale
		s.switchMu.Lock()
		if s.gen != gen || s.closed {
			s.switchMu.Unlock()
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
		s.switchMu.Unlock()
		return
	}
}

func (s *Session) finishRebuild(rb *rebuildState, err error) {
	s.switchMu.Lock()
	rb.err = err
	if s.rebuild == rb {
		s.rebuild = nil
	}
	s.switchMu.Unlock()
}

// WaitBaked waits until Runs are served by a baked, fully optimized ORT
// session: at once in ModeBaked, after the background rebuild in
// ModeHybrid (the error is that rebuild's), never in ModeLive (it returns
// an error). ctx bounds the wait.
func (s *Session) WaitBaked(ctx context.Context) error {
	for {
		s.switchMu.Lock()
		mode, rb, closed := s.mode, s.rebuild, s.closed
		s.switchMu.Unlock()
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

// weightCopy returns the bytes of w under the active configuration (baked
// and hybrid mode, where the mapping may hold the base weights).
func (s *Session) weightCopy(w *weight) []byte {
	s.switchMu.Lock()
	defer s.switchMu.Unlock()
	if s.closed {
		return nil
	}
	out := append([]byte(nil), w.data...)
	if s.patched || len(s.active) == 0 {
		return out
	}
	sub := make([]patch.Config, 0, len(s.active))
	for _, c := range s.active {
		a := *c.Adapter
		a.Tensors = nil
		for _, t := range c.Adapter.Tensors {
			if t.Name == w.info.Name {
				a.Tensors = append(a.Tensors, t)
			}
		}
		sub = append(sub, patch.Config{Adapter: &a, Alpha: c.Alpha})
	}
	pw := []patch.Weight{{Name: w.info.Name, DType: w.info.DType, Shape: w.info.Shape, Data: out}}
	if err := patch.FuseInto(pw, sub, patch.WithoutFingerprintCheck()); err != nil {
		return nil // validated when it was switched in; cannot happen
	}
	return out
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
