// Package atomicfile writes files so that the destination is, at every
// instant, either absent, the complete old file or the complete new file —
// also when the writing process is killed.
//
// Create opens a temporary file beside the destination, named
// ".NAME.tmp-PID-RANDOM" (hidden, and never the destination's own name);
// Commit flushes it to disk, renames it over the destination and syncs the
// directory; Discard removes it. A process killed between Create and
// Commit leaves only its hidden temporary file behind: the next Create for
// the same destination removes temporary files whose writing process no
// longer exists, so such junk does not accumulate.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// noSync, set by DisableSync, skips fsync (for tests that write thousands
// of files).
var noSync atomic.Bool

// DisableSync turns off fsync of files and directories for the rest of the
// process. It is for tests only (fuzz targets that write thousands of
// files): atomicity (old or new file, never a mix) still holds, durability
// across a power loss does not. Nothing undoes it.
func DisableSync() { noSync.Store(true) }

// pauseEnv names the environment variable through which a crash test stops
// a child process at a chosen point of a write, to SIGKILL it there. Its
// value is STAGE:NAME: STAGE is "write" (after any Write) or "commit" (at
// the start of Commit), NAME the base name of the destination. On reaching
// that point the process prints pausedLine and the temporary file's path on
// standard output and sleeps forever. It is read once, when the package is
// initialized; atomicfiletest (which spells the same two strings, checked
// by this package's tests) sets it for a child. Nothing else sets it.
const (
	pauseEnv   = "SHIRA_ATOMICFILE_PAUSE"
	pausedLine = "PAUSED "
)

// pausePoint is where pauseEnv asks the process to stop (zero: nowhere).
type pausePoint struct{ stage, name string }

var pauseAt = parsePause(os.Getenv(pauseEnv))

// parsePause parses a pauseEnv value; anything malformed means no pause.
func parsePause(v string) pausePoint {
	stage, name, ok := strings.Cut(v, ":")
	if !ok || name == "" || (stage != "write" && stage != "commit") {
		return pausePoint{}
	}
	return pausePoint{stage, name}
}

// reached stops the process forever when pauseEnv names this stage of
// writing f's destination.
func (f *File) reached(stage string) {
	if pauseAt.stage != stage || filepath.Base(f.final) != pauseAt.name {
		return
	}
	os.Stdout.WriteString(pausedLine + f.f.Name() + "\n")
	for {
		time.Sleep(time.Hour)
	}
}

// File is a temporary file that becomes the destination on Commit.
type File struct {
	f     *os.File
	final string
	done  bool
}

// Create starts writing path. Stale temporary files of path left by
// killed processes are removed first.
//
// The file gets the permission bits of the file it replaces, or, when path
// does not exist, 0666 less the process umask, as os.Create would give it;
// the temporary file is never more open than that while it is written.
func Create(path string) (*File, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	sweep(dir, base)
	perm, keep := os.FileMode(0o666), false // the kernel applies the umask
	if st, err := os.Stat(path); err == nil && st.Mode().IsRegular() {
		perm, keep = st.Mode().Perm(), true
	}
	f, err := createTemp(dir, tempPrefix(base)+strconv.Itoa(os.Getpid())+"-", perm)
	if err != nil {
		return nil, fmt.Errorf("atomicfile: %w", err)
	}
	if keep { // the umask may have removed some of perm's bits
		if err := f.Chmod(perm); err != nil {
			f.Close()
			os.Remove(f.Name())
			return nil, fmt.Errorf("atomicfile: %w", err)
		}
	}
	return &File{f: f, final: path}, nil
}

// createTemp creates a new file dir/PREFIX+RANDOM with permission perm
// (less the umask), like os.CreateTemp, which always uses 0600.
func createTemp(dir, prefix string, perm os.FileMode) (*os.File, error) {
	for range 10000 {
		name := filepath.Join(dir, prefix+strconv.FormatUint(uint64(rand.Uint32()), 10))
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, perm)
		if !errors.Is(err, fs.ErrExist) {
			return f, err
		}
	}
	return nil, &fs.PathError{Op: "createtemp", Path: filepath.Join(dir, prefix+"*"), Err: fs.ErrExist}
}

// tempPrefix is the name prefix of base's temporary files.
func tempPrefix(base string) string { return "." + base + ".tmp-" }

// IsTemp reports whether name (a base name) is a temporary file of
// destination base.
func IsTemp(name, base string) bool { return strings.HasPrefix(name, tempPrefix(base)) }

// sweep removes dir/.BASE.tmp-PID-* files whose process PID is gone.
// Errors are ignored: sweeping is housekeeping.
func sweep(dir, base string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	prefix := tempPrefix(base)
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || e.IsDir() {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid <= 0 || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		os.Remove(filepath.Join(dir, e.Name()))
	}
}

// Name returns the temporary file's path.
func (f *File) Name() string { return f.f.Name() }

// Path returns the destination path.
func (f *File) Path() string { return f.final }

// OS returns the underlying temporary *os.File (for ReadAt, Seek, ...).
func (f *File) OS() *os.File { return f.f }

// Write writes to the temporary file.
func (f *File) Write(p []byte) (int, error) {
	n, err := f.f.Write(p)
	f.reached("write")
	return n, err
}

// Commit syncs and closes the temporary file and renames it over the
// destination. After Commit, Discard does nothing.
func (f *File) Commit() error {
	if f.done {
		return fmt.Errorf("atomicfile: %s: already committed or discarded", f.final)
	}
	f.reached("commit")
	f.done = true
	var err error
	if !noSync.Load() {
		err = f.f.Sync()
	}
	if err = errors.Join(err, f.f.Close()); err != nil {
		os.Remove(f.f.Name())
		return fmt.Errorf("atomicfile: write %s: %w", f.final, err)
	}
	if err := os.Rename(f.f.Name(), f.final); err != nil {
		os.Remove(f.f.Name())
		return fmt.Errorf("atomicfile: %w", err)
	}
	syncDir(filepath.Dir(f.final))
	return nil
}

// Discard closes and removes the temporary file; it does nothing after
// Commit and on a nil File, so it can be deferred unconditionally.
func (f *File) Discard() {
	if f == nil || f.done {
		return
	}
	f.done = true
	f.f.Close()
	os.Remove(f.f.Name())
}

// syncDir persists a rename (best effort: not every platform can fsync a
// directory).
func syncDir(dir string) {
	if noSync.Load() {
		return
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// WriteFile writes data to path atomically.
func WriteFile(path string, data []byte) error {
	f, err := Create(path)
	if err != nil {
		return err
	}
	defer f.Discard()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("atomicfile: write %s: %w", path, err)
	}
	return f.Commit()
}

// Remove deletes path if it exists (a missing file is not an error). It is
// used before committing a set of files whose last member marks the set as
// complete (an exported directory's manifest).
func Remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("atomicfile: %w", err)
	}
	syncDir(filepath.Dir(path))
	return nil
}
