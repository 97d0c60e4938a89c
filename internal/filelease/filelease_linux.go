//go:build linux

package filelease

import (
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Lease is a read lease on one open file.
type Lease struct {
	f       *os.File // a duplicate of the caller's descriptor, owned here
	onBreak func()

	mu   sync.Mutex // serializes the break with Release
	done bool
}

// Hold takes a read lease on f and keeps a duplicate of its descriptor, so
// the caller may close f. onBreak runs, on the package's own goroutine,
// when another open for writing or a truncation of the file begins; the
// writer waits until it returns. It must copy what the caller maps of the
// file into memory of its own (see Snapshot) and must not wait for the
// writer. The lease is released after onBreak, or by Release.
func Hold(f *os.File, onBreak func()) (*Lease, error) {
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		return nil, fmt.Errorf("filelease: %w", err)
	}
	df := os.NewFile(uintptr(fd), f.Name())
	if err := setLease(df, unix.F_RDLCK); err != nil {
		df.Close()
		return nil, fmt.Errorf("%w: %s: %w", ErrUnsupported, f.Name(), err)
	}
	l := &Lease{f: df, onBreak: onBreak}
	register(l)
	return l, nil
}

// Release gives the lease up; onBreak will not run afterwards. It is
// idempotent and safe to call concurrently with a break.
func (l *Lease) Release() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return nil
	}
	l.done = true
	unregister(l)
	err := setLease(l.f, unix.F_UNLCK)
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("filelease: releasing %s: %w", l.f.Name(), err)
	}
	return nil
}

// Broken reports whether the lease was broken (onBreak ran).
func (l *Lease) Broken() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.done
}

// breaking reports whether a writer is waiting for the lease: while a
// break is in progress, F_GETLEASE reports the type the holder must
// downgrade to (F_UNLCK for a read lease).
func (l *Lease) breaking() bool {
	t, err := unix.FcntlInt(l.f.Fd(), unix.F_GETLEASE, 0)
	return err == nil && t == unix.F_UNLCK
}

// serve runs onBreak and releases the lease, if a break is in progress.
func (l *Lease) serve() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done || !l.breaking() {
		return
	}
	l.onBreak()
	l.done = true
	unregister(l)
	_ = setLease(l.f, unix.F_UNLCK) // lets the writer go on
	_ = l.f.Close()
}

func setLease(f *os.File, typ int) error {
	_, err := unix.FcntlInt(f.Fd(), unix.F_SETLEASE, typ)
	return err
}

// Snapshot replaces the pages of the mapping b (page aligned, as mmap
// returns) with anonymous memory holding the same bytes, in place: b keeps
// its address, so pointers into it (ORT tensors, adapter slices) stay
// valid, and its contents no longer depend on the file. prot is the
// protection of the result (unix.PROT_READ, or PROT_READ|PROT_WRITE).
// Readers may go on during the call: the new pages replace the old ones in
// one mremap, under the kernel's address-space lock. Writers must not
// write b during the call.
func Snapshot(b []byte, prot int) error {
	if len(b) == 0 {
		return nil
	}
	fresh, err := unix.Mmap(-1, 0, len(b), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		return fmt.Errorf("filelease: snapshot: %w", err)
	}
	copy(fresh, b)
	if prot != unix.PROT_READ|unix.PROT_WRITE {
		if err := unix.Mprotect(fresh, prot); err != nil {
			unix.Munmap(fresh)
			return fmt.Errorf("filelease: snapshot: %w", err)
		}
	}
	to := unsafe.Pointer(unsafe.SliceData(b))
	if _, err := unix.MremapPtr(unsafe.Pointer(unsafe.SliceData(fresh)), uintptr(len(b)), to, uintptr(len(b)),
		unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED); err != nil {
		unix.Munmap(fresh)
		return fmt.Errorf("filelease: snapshot: %w", err)
	}
	return nil
}
