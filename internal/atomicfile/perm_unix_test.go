//go:build unix

package atomicfile

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// withUmask sets the process umask for the rest of the test.
func withUmask(t *testing.T, mask int) {
	old := syscall.Umask(mask)
	t.Cleanup(func() { syscall.Umask(old) })
}

// perm returns the permission bits of path.
func perm(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// TestNewFileFollowsUmask: a new file gets 0666 &^ umask, as os.Create
// would give it.
func TestNewFileFollowsUmask(t *testing.T) {
	for _, c := range []struct {
		umask int
		want  os.FileMode
	}{{0o077, 0o600}, {0o022, 0o644}, {0o002, 0o664}} {
		withUmask(t, c.umask)
		p := filepath.Join(t.TempDir(), "new.bin")
		if err := WriteFile(p, []byte("x")); err != nil {
			t.Fatal(err)
		}
		if got := perm(t, p); got != c.want {
			t.Errorf("umask %03o: new file %v, want %v", c.umask, got, c.want)
		}
	}
}

// TestReplacedFileKeepsItsMode: a file written over an existing one keeps
// the existing permission bits whatever the umask, and the temporary file
// is never more open than them while it is written.
func TestReplacedFileKeepsItsMode(t *testing.T) {
	for _, c := range []struct {
		umask int
		old   os.FileMode
	}{{0o022, 0o600}, {0o077, 0o640}, {0o022, 0o755}, {0o000, 0o400}} {
		withUmask(t, c.umask)
		p := filepath.Join(t.TempDir(), "old.bin")
		if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, c.old); err != nil {
			t.Fatal(err)
		}
		f, err := Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if tmp := perm(t, f.Name()); tmp&^c.old != 0 {
			t.Errorf("replacing a %v file: temporary file %v while written", c.old, tmp)
		}
		f.Write([]byte("new"))
		if err := f.Commit(); err != nil {
			t.Fatal(err)
		}
		if got := perm(t, p); got != c.old {
			t.Errorf("umask %03o: replaced %v file is %v", c.umask, c.old, got)
		}
	}
}
