package onnxwire

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// ErrEscapesModelDir is wrapped by the errors of OpenInDir (and so of
// Tensor.Open and Tensor.Data) for a location that lies outside the
// directory it is relative to: an absolute path, a path through "..", or
// a path that leaves the directory once symbolic links are followed.
var ErrEscapesModelDir = errors.New("escapes the model directory")

// ErrNotRegularFile is wrapped by the errors of OpenInDir (and so of
// Tensor.Open and Tensor.Data) for a location that names a directory,
// FIFO, socket or device instead of a regular file.
var ErrNotRegularFile = errors.New("not a regular file")

// OpenInDir opens name, a slash-separated path relative to dir, for
// reading, the way ONNX Runtime reads external data: symbolic links are
// followed (a link inside dir may point to another file inside dir), but
// the file reached must lie inside dir once every link of both dir and
// name is resolved, and must be a regular file. Anything else is refused
// without being opened (a FIFO would block, a device read forever):
// errors wrap ErrEscapesModelDir, ErrNotRegularFile, or the file system's
// error (fs.ErrNotExist, ...); their text names name, not dir (callers
// add what the file is for). An empty dir is the current directory.
//
// The check is not defeated by a file swapped while it runs: the resolved
// path is opened through an os.Root on the resolved directory (which
// refuses to leave it, whatever was renamed in between), without
// blocking, and the open file must be the regular file that was checked.
// Hard links and bind mounts are not symbolic links: they are not
// detected.
func OpenInDir(dir, name string) (*os.File, error) {
	if name == "" || !filepath.IsLocal(filepath.FromSlash(name)) {
		return nil, fmt.Errorf("%q is empty, absolute or goes through \"..\": %w", name, ErrEscapesModelDir)
	}
	if dir == "" {
		dir = "."
	}
	realDir, err := filepath.EvalSymlinks(dir)
	if err == nil {
		realDir, err = filepath.Abs(realDir)
	}
	if err != nil {
		return nil, fmt.Errorf("model directory: %w", err)
	}
	target, err := filepath.EvalSymlinks(filepath.Join(realDir, filepath.FromSlash(name)))
	if err != nil {
		return nil, fmt.Errorf("%q: %w", name, unwrapPathError(err))
	}
	rel, err := filepath.Rel(realDir, target)
	if err != nil || !filepath.IsLocal(rel) {
		return nil, fmt.Errorf("%q resolves to %s, outside %s: %w", name, target, realDir, ErrEscapesModelDir)
	}
	st, err := os.Lstat(target)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", name, unwrapPathError(err))
	}
	if !st.Mode().IsRegular() {
		return nil, notRegular(name, st.Mode())
	}
	root, err := os.OpenRoot(realDir)
	if err != nil {
		return nil, fmt.Errorf("model directory: %w", err)
	}
	defer root.Close()
	// O_NONBLOCK: should the file have become a FIFO since the Lstat, the
	// open must not wait for a writer (for a regular file it changes nothing)
	f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", name, err)
	}
	fst, err := f.Stat()
	switch {
	case err != nil:
		err = fmt.Errorf("%q: %w", name, err)
	case !fst.Mode().IsRegular():
		err = notRegular(name, fst.Mode())
	case !os.SameFile(st, fst):
		err = fmt.Errorf("%q was replaced while it was being opened: %w", name, fs.ErrInvalid)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func notRegular(name string, mode fs.FileMode) error {
	return fmt.Errorf("%q is a %s: %w", name, fileKind(mode), ErrNotRegularFile)
}

// fileKind names a non-regular file type for messages.
func fileKind(mode fs.FileMode) string {
	switch {
	case mode.IsDir():
		return "directory"
	case mode&fs.ModeNamedPipe != 0:
		return "FIFO"
	case mode&fs.ModeSocket != 0:
		return "socket"
	case mode&fs.ModeDevice != 0:
		return "device"
	case mode&fs.ModeSymlink != 0:
		return "symbolic link"
	}
	return "special file"
}

// unwrapPathError drops the *fs.PathError around err: its path is an
// internal absolute path, the callers name the location instead.
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
