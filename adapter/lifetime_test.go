package adapter

import (
	"errors"
	"path/filepath"
	"sync"
	"testing"
)

// TestCloseWhileRetained checks that Close of an adapter in use defers the
// unmap to the last Release: the slices stay readable, new Retains fail
// with ErrClosed, and the mapping goes when the last user lets go.
func TestCloseWhileRetained(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.shira")
	if err := Write(p, sample(t)); err != nil {
		t.Fatal(err)
	}
	a, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Retain(); err != nil {
		t.Fatal(err)
	}
	cp := *a // copies share the mapping
	if err := cp.Retain(); err != nil {
		t.Fatal(err)
	}
	want := append([]uint32(nil), a.Tensors[0].Indices...)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if !a.Closed() || !cp.Closed() {
		t.Fatal("Closed() is false after Close")
	}
	if err := a.Retain(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Retain after Close = %v, want ErrClosed", err)
	}
	a.Release()
	// still retained by cp: the memory must be intact
	for i, ix := range a.Tensors[0].Indices {
		if ix != want[i] {
			t.Fatalf("index %d = %d after Close while retained, want %d", i, ix, want[i])
		}
	}
	if a.Tensors[0].Indices == nil {
		t.Fatal("mapping released while retained")
	}
	cp.Release()
	if a.Tensors[0].Indices != nil {
		t.Fatal("mapping not released by the last Release after Close")
	}
	if err := a.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
}

// TestRetainInMemory: adapters not made by Open need no retaining.
func TestRetainInMemory(t *testing.T) {
	a := sample(t)
	if err := a.Retain(); err != nil {
		t.Fatal(err)
	}
	a.Release()
	if err := a.Close(); err != nil || a.Closed() {
		t.Fatalf("Close of an in-memory adapter: %v, closed %v", err, a.Closed())
	}
}

// TestRetainCloseRace runs Retain/Release against Close (under -race).
func TestRetainCloseRace(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.shira")
	if err := Write(p, sample(t)); err != nil {
		t.Fatal(err)
	}
	for range 50 {
		a, err := Open(p)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 100 {
					if a.Retain() != nil {
						return
					}
					_ = a.Tensors[0].Indices[0] // must be mapped while retained
					a.Release()
				}
			})
		}
		wg.Go(func() { a.Close() })
		wg.Wait()
	}
}
