package ort

import (
	"fmt"

	"github.com/shira-ort/shira-ort/patch"
)

// patcher switches adapters in the session's weight memory.
type patcher = *patch.Patcher

// newPatcher builds the patcher over the session's mapped weights; adapters
// recording another model fingerprint than the manifest's are refused.
func newPatcher(ws []*weight, fingerprint string) (patcher, error) {
	pw := make([]patch.Weight, len(ws))
	for i, w := range ws {
		pw[i] = patch.Weight{
			Name:       w.info.Name,
			DType:      w.info.DType,
			Shape:      append([]int64(nil), w.info.Shape...),
			Data:       w.data,
			BaseSHA256: w.info.SHA256,
		}
	}
	var opts []patch.Option
	if fingerprint != "" {
		opts = append(opts, patch.WithModelFingerprint(fingerprint))
	}
	p, err := patch.New(pw, opts...)
	if err != nil {
		return nil, fmt.Errorf("ort: %w", err)
	}
	return p, nil
}

// Set makes cfgs the active adapter configuration (in order), replacing the
// current one: it validates cfgs, reverts what is active and applies cfgs.
// It waits for running Runs and blocks new ones until it is done, so no Run
// ever sees a half-switched state.
func (s *Session) Set(cfgs ...patch.Config) error {
	return s.exclusive(func(p patcher) error { return p.Set(cfgs...) })
}

// Apply adds cfg on top of the active configuration, under the write lock
// (see Set).
func (s *Session) Apply(cfg patch.Config) error {
	return s.exclusive(func(p patcher) error { return p.Apply(cfg) })
}

// Revert restores the exported weights bit for bit, under the write lock
// (see Set).
func (s *Session) Revert() error {
	return s.exclusive(func(p patcher) error { return p.Revert() })
}

// Active returns the active adapter configurations, in application order
// (nil for a session without exposed weights).
func (s *Session) Active() []patch.Config {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed || s.patcher == nil {
		return nil
	}
	return s.patcher.Active()
}

// exclusive runs f on the patcher holding the write lock.
func (s *Session) exclusive(f func(patcher) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.patcher == nil {
		return ErrNoWeights
	}
	return f(s.patcher)
}
