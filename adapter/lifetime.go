package adapter

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// ErrClosed is returned by [Adapter.Retain] (and so by the patch and ort
// calls that would start using an adapter) after [Adapter.Close].
var ErrClosed = errors.New("adapter: closed")

// mapping is the memory an adapter made by Open aliases, with the count of
// its users. It is shared by copies of the Adapter value.
type mapping struct {
	// state holds the outstanding Retains in its low bits and the closed
	// and freed flags above them; Retain and Release are a compare-and-swap
	// each (they run on every switch).
	state   atomic.Uint64
	unmap   func() error
	tensors []Tensor // the decoded tensors, cleared when unmapped
}

const (
	closedBit = 1 << 62 // Close was called
	freedBit  = 1 << 61 // the mapping is gone (or going)
	countMask = freedBit - 1
)

// Retain marks the adapter as in use: the memory its tensors alias stays
// mapped until the matching [Adapter.Release], even if [Adapter.Close] is
// called meanwhile. It fails with an error wrapping ErrClosed once Close
// was called. patch.Patcher and ort.Session retain every adapter they make
// active; code that reads an adapter's slices while another goroutine may
// close it should do the same. For adapters not made by Open it does
// nothing and never fails.
func (a *Adapter) Retain() error {
	m := a.m
	if m == nil {
		return nil
	}
	for {
		s := m.state.Load()
		if s&closedBit != 0 {
			return fmt.Errorf("%w: %q", ErrClosed, a.Name)
		}
		if m.state.CompareAndSwap(s, s+1) {
			return nil
		}
	}
}

// Release ends one [Adapter.Retain]. The last Release after Close unmaps
// the file.
func (a *Adapter) Release() {
	m := a.m
	if m == nil {
		return
	}
	s := m.state.Add(^uint64(0)) // -1
	if s&countMask == countMask {
		panic("adapter: Release without Retain")
	}
	if s == closedBit { // closed, and that was the last user
		m.free()
	}
}

// Close releases the adapter's memory mapping (adapters made by [Open]; a
// no-op for others). When the adapter is still in use (retained, e.g.
// active in a session), the mapping is released when the last user lets
// go, so in-flight use stays valid; new uses fail with ErrClosed. Close is
// idempotent.
func (a *Adapter) Close() error {
	m := a.m
	if m == nil {
		return nil
	}
	for {
		s := m.state.Load()
		if s&closedBit != 0 {
			return nil
		}
		if m.state.CompareAndSwap(s, s|closedBit) {
			if s&countMask == 0 {
				return m.free()
			}
			return nil // the last Release frees it
		}
	}
}

// Closed reports whether Close was called on the adapter (or a copy).
func (a *Adapter) Closed() bool {
	m := a.m
	return m != nil && m.state.Load()&closedBit != 0
}

// free unmaps the file and clears the tensors' slices into it, once: it
// runs when the mapping is closed and unused, which only one caller
// observes.
func (m *mapping) free() error {
	if !m.state.CompareAndSwap(closedBit, closedBit|freedBit) {
		return nil
	}
	for i := range m.tensors {
		m.tensors[i].Indices, m.tensors[i].Values = nil, nil
	}
	if err := m.unmap(); err != nil {
		return fmt.Errorf("adapter: close: %w", err)
	}
	return nil
}
