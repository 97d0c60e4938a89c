package atomicfile

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/internal/atomicfile/atomicfiletest"
)

func TestWriteFileReplacesAndLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out.bin")
	for _, data := range []string{"old", "new contents"} {
		if err := WriteFile(p, []byte(data)); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != data {
			t.Fatalf("read %q, %v; want %q", got, err, data)
		}
	}
	assertOnly(t, dir, "out.bin")
}

func TestDiscardRemovesTemp(t *testing.T) {
	dir := t.TempDir()
	f, err := Create(filepath.Join(dir, "x"))
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("partial"))
	f.Discard()
	f.Discard() // idempotent
	if err := f.Commit(); err == nil {
		t.Fatal("Commit after Discard succeeded")
	}
	assertOnly(t, dir)
}

// assertOnly fails unless dir holds exactly names.
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Fatalf("%s holds %v, want %v", dir, got, names)
	}
}

const childEnv = "ATOMICFILE_KILL_CHILD"

// TestKillChild is the child of TestKilledWriter: it writes its argument
// file in 64 KiB chunks forever; the parent's PauseAt stops it after the
// first chunk and kills it.
func TestKillChild(t *testing.T) {
	path := os.Getenv(childEnv)
	if path == "" {
		t.Skip("child of TestKilledWriter")
	}
	f, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte{'n'}, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
}

// TestKilledWriter kills a process in the middle of writing a file: the
// destination keeps its old complete contents, the only trace is the
// hidden temporary file, and the next write of the destination removes it.
func TestKilledWriter(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "model.weights")
	if err := WriteFile(p, []byte("old complete file")); err != nil {
		t.Fatal(err)
	}
	tmp := atomicfiletest.KillWhilePaused(t, exec.Command(os.Args[0], "-test.run=^TestKillChild$"),
		childEnv+"="+p, atomicfiletest.PauseAt("write", "model.weights"))
	st, err := os.Stat(tmp)
	if err != nil || st.Size() != 64<<10 {
		t.Fatalf("the killed writer's temporary file: %v, %v (want the first 64 KiB chunk)", st, err)
	}
	if !IsTemp(filepath.Base(tmp), "model.weights") || !strings.HasPrefix(filepath.Base(tmp), ".") {
		t.Fatalf("temporary file %s is not a hidden .model.weights.tmp-* file", tmp)
	}
	if got, _ := os.ReadFile(p); string(got) != "old complete file" {
		t.Fatalf("destination after the kill: %q", got)
	}
	if err := WriteFile(p, []byte("new")); err != nil {
		t.Fatal(err)
	}
	assertOnly(t, dir, "model.weights")
}

// TestPauseProtocol: this package and atomicfiletest spell the pause
// variable and the line the same way, and only well-formed values pause.
func TestPauseProtocol(t *testing.T) {
	if pauseEnv != atomicfiletest.PauseEnv || pausedLine != atomicfiletest.Paused {
		t.Fatalf("atomicfile %q %q, atomicfiletest %q %q", pauseEnv, pausedLine, atomicfiletest.PauseEnv, atomicfiletest.Paused)
	}
	env, value, _ := strings.Cut(atomicfiletest.PauseAt("commit", "manifest.json"), "=")
	if env != pauseEnv || parsePause(value) != (pausePoint{"commit", "manifest.json"}) {
		t.Fatalf("PauseAt gives %s=%s, parsed as %+v", env, value, parsePause(value))
	}
	for _, v := range []string{"", "commit", "commit:", "rename:x", "write"} {
		if p := parsePause(v); p != (pausePoint{}) {
			t.Errorf("parsePause(%q) = %+v, want no pause", v, p)
		}
	}
}
