package adapter

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestOpenIsASnapshot truncates and rewrites an opened adapter's file:
// the adapter's data must stay what was opened (no SIGBUS, no change),
// with a lease guarding the mapping and without one (a file still open for
// writing gets no lease: Open reads it instead).
func TestOpenIsASnapshot(t *testing.T) {
	for _, keepWriter := range []bool{false, true} {
		p := filepath.Join(t.TempDir(), "a.shira")
		want := sample(t)
		if err := Write(p, want); err != nil {
			t.Fatal(err)
		}
		if keepWriter {
			w, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
		}
		a, err := Open(p)
		if err != nil {
			t.Fatal(err)
		}
		ix := slices.Clone(a.Tensors[0].Indices)
		vals := slices.Clone(a.Tensors[0].Values)
		done := make(chan error, 1)
		go func() { done <- os.Truncate(p, 0) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("truncating an opened adapter's file blocked for 20 s")
		}
		if err := os.WriteFile(p, make([]byte, 4096), 0o644); err != nil {
			t.Fatal(err)
		}
		// reads every page of the data: SIGBUS here if the mapping followed the file
		if !slices.Equal(a.Tensors[0].Indices, ix) || !slices.Equal(a.Tensors[0].Values, vals) {
			t.Fatalf("keepWriter=%v: the adapter changed with its file", keepWriter)
		}
		equalAdapters(t, a, want)
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOpenFIFO: a FIFO is refused at once, not waited on.
func TestOpenFIFO(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fifo.shira")
	if err := mkfifo(p); err != nil {
		t.Skip("no FIFOs here:", err)
	}
	done := make(chan error, 1)
	go func() { _, err := Open(p); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Open(FIFO) succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Open(FIFO) blocked")
	}
}
