//go:build linux

package filelease

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// The leases held by this process. The kernel tells a lease holder about a
// break with SIGIO, which does not say which file: on every SIGIO each
// lease checks whether a writer waits for it.
var (
	leasesMu sync.Mutex
	leases   = map[*Lease]bool{}
	sigOnce  sync.Once
)

func register(l *Lease) {
	sigOnce.Do(func() {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGIO)
		go func() {
			for range c {
				serveAll()
			}
		}()
	})
	leasesMu.Lock()
	leases[l] = true
	leasesMu.Unlock()
	// A break that began between F_SETLEASE and registering sent its
	// SIGIO before anyone looked: look now.
	go serveAll()
}

func unregister(l *Lease) {
	leasesMu.Lock()
	delete(leases, l)
	leasesMu.Unlock()
}

// serveAll lets every lease with a waiting writer run its break.
func serveAll() {
	leasesMu.Lock()
	ls := make([]*Lease, 0, len(leases))
	for l := range leases {
		ls = append(ls, l)
	}
	leasesMu.Unlock()
	for _, l := range ls {
		l.serve()
	}
}
