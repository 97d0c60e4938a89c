package ort

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/patch"
)

// newPatcher builds the patcher over the session's mapped weights; adapters
// recording another model fingerprint than the manifest's are refused, and
// with Options.CheckFinite configurations with non-finite results.
func newPatcher(ws []*weight, fingerprint string, o *Options) (*patch.Patcher, error) {
	pw := make([]patch.Weight, len(ws))
	for i, w := range ws {
		pw[i] = patchWeight(w, w.data)
	}
	var opts []patch.Option
	switch {
	case o.SkipFingerprintCheck:
		opts = append(opts, patch.WithoutFingerprintCheck())
	case fingerprint != "":
		opts = append(opts, patch.WithModelFingerprint(fingerprint))
	}
	if o.CheckFinite {
		opts = append(opts, patch.WithFiniteCheck())
	}
	opts = append(opts, patch.WithRounding(o.Rounding))
	p, err := patch.New(pw, opts...)
	if err != nil {
		return nil, fmt.Errorf("ort: %w", err)
	}
	return p, nil
}

// patchWeight describes w to the patcher, its bytes being data.
func patchWeight(w *weight, data []byte) patch.Weight {
	shape := w.info.Shape
	if w.quant != nil {
		shape = w.quant.Shape // a MatMulNBits weight is indexed as [K, N], not as its packed bytes
	}
	return patch.Weight{
		Name:       w.info.Name,
		DType:      w.info.DType,
		Shape:      append([]int64(nil), shape...),
		Data:       data,
		BaseSHA256: w.info.SHA256,
		Quant:      w.quant,
	}
}

// Set makes cfgs the active adapter configuration (in order), replacing the
// current one. The configuration is validated first; on error nothing
// changed. What happens next depends on the mode:
//
//   - ModePacked: Set translates cfgs' indices into the packed layout, then
//     reverts what is active and scatters cfgs into ORT's prepacked weight
//     buffers, waiting for running Runs and blocking new ones while it
//     writes; the next Run sees cfgs. No cfgs (Set()) reverts to the base
//     weights, in every mode.
//   - ModeLive: Set reverts what is active and applies cfgs in place,
//     waiting for running Runs and blocking new ones until done; the next
//     Run sees cfgs.
//   - ModeBaked: Set patches the session's weights, builds a new baked ORT
//     session from them and swaps it in; Runs continue on the old session
//     meanwhile and see cfgs once Set returns.
//   - ModeHybrid: Set applies cfgs live (as ModeLive) and returns; a baked
//     session is rebuilt in the background and replaces the live one when
//     ready (see WaitBaked). A newer switch supersedes a rebuild in
//     progress.
//
// No Run ever sees a mixture of two configurations. The session retains
// the adapters it makes active (adapter.Adapter.Retain): closing one while
// it is active is safe, and a closed adapter is refused.
//
// ctx bounds the wait for another switch to finish and, in ModeBaked, the
// rebuild: a ctx done before the new configuration serves Runs returns
// ctx.Err() with the previous configuration still active.
func (s *Session) Set(ctx context.Context, cfgs ...patch.Config) error {
	return s.switchTo(ctx, func([]patch.Config) []patch.Config { return cfgs })
}

// Apply adds cfg on top of the active configuration (see Set).
func (s *Session) Apply(ctx context.Context, cfg patch.Config) error {
	return s.switchTo(ctx, func(active []patch.Config) []patch.Config {
		s.scratch = append(append(s.scratch[:0], active...), cfg) // under switchMu
		return s.scratch
	})
}

// Revert restores the exported weights bit for bit (see Set).
func (s *Session) Revert(ctx context.Context) error {
	return s.switchTo(ctx, func([]patch.Config) []patch.Config { return nil })
}

// Active returns the active adapter configurations, in application order
// (nil for a session without exposed weights or after Close).
func (s *Session) Active() []patch.Config {
	s.switchMu.lock()
	defer s.switchMu.unlock()
	if s.closed || s.patcher == nil {
		return nil
	}
	return slices.Clone(s.active)
}

// Survival reports, for each quantized weight the active configuration
// targets, how much of the adapters' change its codes kept
// (patch.Survival: entries, codes unchanged and clipped, intended and
// landed norms); nil for a session with no quantized weight adapted, or
// after Revert or Close.
func (s *Session) Survival() map[string]patch.Survival {
	s.switchMu.lock()
	defer s.switchMu.unlock()
	if s.closed || s.patcher == nil {
		return nil
	}
	m := s.patcher.Survival()
	if s.packed != nil && s.packed.patcher != nil {
		// the packed patcher's weights are the buffers (NAME#packedI), one
		// per MatMulNBits weight: its figures are the weight's
		m = map[string]patch.Survival{}
		for name, sv := range s.packed.patcher.Survival() {
			w, _, _ := strings.Cut(name, "#packed")
			m[w] = sv
		}
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

// Caveats lists where this session's Runs may compute differently from a
// plain ONNX Runtime session of the same model with the same adapters
// fused (never silently): a MatMulNBits weight with accuracy_level 2 or
// more is computed by ORT at that lower precision (accuracy_level 4: int8)
// only when it is a constant it can prepack, so the Runs a live session
// serves (ModeLive, and ModeHybrid until its rebuilt session is swapped
// in) compute it in float32 and differ by that rounding. ModeBaked serves
// only rebuilt sessions, with plain ORT's numerics. Empty when there is no
// such difference.
func (s *Session) Caveats() []string {
	if s.mode == ModeBaked || s.mode == ModePacked {
		return nil // only plain ORT sessions serve Runs
	}
	var out []string
	for _, w := range s.weights {
		if q := w.info.Quant; q != nil && q.Form == export.QuantNBits && q.AccuracyLevel >= 2 {
			when := "every Run of this live session"
			if s.mode != ModeLive {
				when = "the live Runs served after a switch, until the rebuilt session is swapped in"
			}
			out = append(out, fmt.Sprintf("MatMulNBits %s (weight %s, accuracy_level %d): plain ONNX Runtime computes a constant B at that lower precision, %s compute it in float32; outputs differ by that rounding (ModeBaked serves rebuilt numerics only)",
				q.Node, w.info.Name, q.AccuracyLevel, when))
		}
	}
	return out
}
