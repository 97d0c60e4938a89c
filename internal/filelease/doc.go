// Package filelease keeps memory mappings of files safe from other writers
// of those files. A file mapped into memory is not a snapshot: when another
// process truncates it, the next access to a mapped page beyond the new end
// kills the process with SIGBUS (also for private, copy-on-write pages),
// and when it rewrites it in place, pages that were never written change
// under the mapping. A server cannot let someone else's `cp` or `truncate`
// crash it or change its weights.
//
// Hold takes a read lease on the file (fcntl F_SETLEASE F_RDLCK, Linux):
// the kernel then makes any process that opens the file for writing or
// truncates it wait (up to /proc/sys/fs/lease-break-time, 45 s by default)
// and notifies the holder with SIGIO. On that notice the Lease calls its
// break function, which copies the mapped data into memory of its own
// (Snapshot does it for a mapping, in place), and then releases the lease,
// letting the writer go on: from then on the file's changes do not reach
// the mapping. While nobody writes, a lease costs nothing.
//
// A lease is refused when the caller does not own the file (without
// CAP_LEASE), when the file is open for writing anywhere, on file systems
// without leases, and outside Linux (ErrUnsupported); callers then take the
// snapshot at once.
package filelease

import "errors"

// ErrUnsupported is wrapped by Hold's (and Snapshot's) error when no lease
// can be taken here (see the package documentation).
var ErrUnsupported = errors.New("filelease: no lease")
