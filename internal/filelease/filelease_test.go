//go:build linux

package filelease

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// mapped writes content to a file, maps it read-only and holds a lease
// whose break snapshots the mapping.
func mapped(t *testing.T, content []byte) (path string, b []byte, l *Lease) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err = unix.Mmap(int(f.Fd()), 0, len(content), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	l, err = Hold(f, func() {
		if err := Snapshot(b, unix.PROT_READ); err != nil {
			t.Error(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Release() })
	return path, b, l
}

// within fails the test if f does not return in time (a writer blocked
// for the whole lease-break time means the break was not served).
func within(t *testing.T, what string, f func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: still blocked after 20 s: the lease break was not served", what)
	}
}

// TestTruncateUnderMapping: truncating a mapped, leased file neither
// kills the process (SIGBUS) nor changes the mapped bytes.
func TestTruncateUnderMapping(t *testing.T) {
	content := bytes.Repeat([]byte("shira-ort "), 3000) // 30 000 bytes: 8 pages
	path, b, l := mapped(t, content)
	within(t, "truncate", func() error { return os.Truncate(path, 0) })
	if !l.Broken() {
		t.Fatal("the lease was not broken by a truncation")
	}
	if !bytes.Equal(b, content) { // reads every page: SIGBUS here without the snapshot
		t.Fatal("the mapping changed after the file was truncated")
	}
}

// TestRewriteUnderMapping: rewriting a mapped, leased file in place (as
// cp does: open with O_TRUNC, write) does not change the mapped bytes.
func TestRewriteUnderMapping(t *testing.T) {
	content := bytes.Repeat([]byte{7}, 20000)
	path, b, _ := mapped(t, content)
	within(t, "rewrite", func() error { return os.WriteFile(path, bytes.Repeat([]byte{9}, 20000), 0o644) })
	if !bytes.Equal(b, content) {
		t.Fatal("the mapping follows the rewritten file")
	}
}

// TestReleaseLetsWritersGo: after Release the lease is gone (a writer does
// not wait and the mapping follows the file, as any shared mapping does).
func TestReleaseLetsWritersGo(t *testing.T) {
	content := bytes.Repeat([]byte{1}, 8192)
	path, _, l := mapped(t, content)
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(); err != nil {
		t.Fatal("second Release:", err)
	}
	start := time.Now()
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("a writer waited %v after Release", d)
	}
	if l.Broken() != true {
		t.Fatal("Broken() should report a released lease as done")
	}
}

// TestHoldRefusedWhileOpenForWriting: no read lease on a file that is
// open for writing (the caller then has to snapshot at once).
func TestHoldRefusedWhileOpenForWriting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	w, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := Hold(r, func() {}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Hold on a file open for writing = %v, want ErrUnsupported", err)
	}
}
