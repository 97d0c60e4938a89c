package ort

import (
	"fmt"
	"strings"
)

// Mode chooses how a Session made by Open turns an adapter switch into what
// ORT computes. The zero value, ModeDefault, means DefaultMode.
//
// Bit stability: for a given adapter configuration, ModeLive and ModeBaked
// sessions compute the same output bits on every Run (and Revert restores
// the base outputs bit for bit). ModeHybrid does not: Runs right after a
// switch use the live kernels, Runs after the background rebuild the
// prepacked ones, which sum in another order, so the outputs differ in the
// last bits between the two phases. Choose ModeLive or ModeBaked when the
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
)

// DefaultMode is the mode ModeDefault resolves to: hybrid, which switches
// as fast as live and runs as fast as a plain session once the background
// rebuild is done (see docs/session-modes.md).
const DefaultMode = ModeHybrid

var modeNames = map[Mode]string{ModeDefault: "default", ModeLive: "live", ModeBaked: "baked", ModeHybrid: "hybrid"}

// String returns "default", "live", "baked" or "hybrid".
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
	return 0, fmt.Errorf("ort: unknown session mode %q (want live, baked or hybrid)", s)
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
