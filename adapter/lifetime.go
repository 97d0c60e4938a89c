package adapter

import (
	"errors"
	"fmt"
	"sync"
)

// ErrClosed is returned by [Adapter.Retain] (and so by the patch and ort
// calls that would start using an adapter) after [Adapter.Close].
var ErrClosed = errors.New("adapter: closed")

// mapping is the memory an adapter made by Open aliases, with the count of
// its users. It is shared by copies of the Adapter value.
type mapping struct {
	mu      sync.Mutex
	refs    int  // outstanding Retains
	closed  bool // Close was called
	unmap   func() error
	tensors []Tensor // the decoded tensors, cleared when unmapped
}

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
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("%w: %q", ErrClosed, a.Name)
	}
	m.refs++
	return nil
}

// Release ends one [Adapter.Retain]. The last Release after Close unmaps
// the file.
func (a *Adapter) Release() {
	m := a.m
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.refs <= 0 {
		panic("adapter: Release without Retain")
	}
	m.refs--
	if m.refs == 0 && m.closed {
		_ = m.free() // no caller to report to; munmap of a valid mapping does not fail
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
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	if m.refs > 0 {
		return nil
	}
	return m.free()
}

// Closed reports whether Close was called on the adapter (or a copy).
func (a *Adapter) Closed() bool {
	m := a.m
	if m == nil {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// free unmaps the file and clears the tensors' slices into it. Under mu.
func (m *mapping) free() error {
	if m.unmap == nil {
		return nil
	}
	for i := range m.tensors {
		m.tensors[i].Indices, m.tensors[i].Values = nil, nil
	}
	unmap := m.unmap
	m.unmap = nil
	if err := unmap(); err != nil {
		return fmt.Errorf("adapter: close: %w", err)
	}
	return nil
}
