package ort

import (
	"fmt"
	"strings"
)

// Mode chooses how a Session made by Open turns an adapter switch into what
// ORT computes. The zero value, ModeDefault, means DefaultMode.
//
// Bit stability: for a given adapter configuration, ModePacked, ModeLive
// and ModeBaked sessions compute the same output bits on every Run (and
// Revert restores the base outputs bit for bit); packed and baked sessions
// compute exactly what a plain ORT session on the offline-fused model
// computes. ModeHybrid does not: Runs right after a
// switch use the live kernels, Runs after the background rebuild the
// prepacked ones, which sum in another order, so the outputs differ in the
// last bits between the two phases. Choose ModePacked, ModeLive or ModeBaked when the
// same configuration must always give the same bits.
type Mode int

// The session modes. See docs/session-modes.md for measurements.
const (
	// ModeDefault selects DefaultMode.
	ModeDefault Mode = iota
	// ModeLive keeps every exposed weight an overridable initializer that
	// ORT reads in place from the session's memory: a switch is visible on
	// the very next Run, but the patched MatMul/Conv weights are not
	// prepacked (slower Runs, most at small batches > 1).
	ModeLive
	// ModeBaked makes the exposed weights ordinary constant initializers,
	// prepacked and optimized by ORT like any plain model. A switch patches
	// the session's weight memory and builds a new ORT session from it
	// (OrtApi::AddExternalInitializers, from memory), then swaps it in; Set
	// returns once the new session serves Runs.
	ModeBaked
	// ModeHybrid applies a switch live at once (as ModeLive) and rebuilds
	// a baked session in the background; when it is ready it replaces the
	// live one atomically, and Runs are back at full speed. Its outputs
	// are not bit-stable across that replacement (see Mode).
	ModeHybrid
	// ModePacked serves Runs from one ordinary, fully optimized ORT
	// session whose prepacked MatMul/Gemm weights the session found at
	// Open (ORT allocates them through an allocator the project
	// registers on the environment) and patches in place: a switch
	// scatters the adapter's values into ORT's packed buffers between
	// Runs, so it is visible on the very next Run, and Runs cost what a
	// plain session's cost. Where a weight's packed form cannot be
	// identified (see Session.FallbackReason), the session falls back to
	// ModeHybrid for all its weights.
	ModePacked
)

// DefaultMode is the mode ModeDefault resolves to: packed, which switches
// as fast as live and runs as fast as a plain session; a session whose
// weights it cannot patch in their packed form falls back to hybrid (see
// docs/session-modes.md).
const DefaultMode = ModePacked

var modeNames = map[Mode]string{ModeDefault: "default", ModeLive: "live", ModeBaked: "baked", ModeHybrid: "hybrid", ModePacked: "packed"}

// String returns "default", "live", "baked", "hybrid" or "packed".
func (m Mode) String() string {
	if n, ok := modeNames[m]; ok {
		return n
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode accepts the names String returns ("" means ModeDefault).
func ParseMode(s string) (Mode, error) {
	if strings.TrimSpace(s) == "" {
		return ModeDefault, nil
	}
	for m, n := range modeNames {
		if strings.EqualFold(n, strings.TrimSpace(s)) {
			return m, nil
		}
	}
	return 0, fmt.Errorf("ort: unknown session mode %q (want packed, live, baked or hybrid)", s)
}

// MarshalText returns String's name.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText accepts what ParseMode accepts.
func (m *Mode) UnmarshalText(b []byte) error {
	v, err := ParseMode(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// resolve maps ModeDefault to DefaultMode.
func (m Mode) resolve() Mode {
	if m == ModeDefault {
		return DefaultMode
	}
	return m
}

func (m Mode) valid() bool { _, ok := modeNames[m]; return ok }
