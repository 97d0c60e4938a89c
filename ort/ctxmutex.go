package ort

import (
	"context"
	"sync"
)

// ctxMutex is a mutex whose lock can give up when a context is done. The
// uncontended path is a sync.Mutex TryLock; a contended lockCtx waits in a
// goroutine that takes the lock and hands it over, or gives it back when
// the caller has left. The zero value is an unlocked mutex.
type ctxMutex struct{ mu sync.Mutex }

// lock waits for the mutex.
func (m *ctxMutex) lock() { m.mu.Lock() }

// lockCtx waits for the mutex or for ctx; it returns ctx.Err() without
// the mutex when ctx is done first.
func (m *ctxMutex) lockCtx(ctx context.Context) error {
	if m.mu.TryLock() {
		return nil
	}
	if ctx.Done() == nil {
		m.mu.Lock()
		return nil
	}
	got := make(chan struct{})
	abandoned := make(chan struct{})
	go func() {
		m.mu.Lock()
		select {
		case got <- struct{}{}:
		case <-abandoned:
			m.mu.Unlock() // the caller left: give the lock back
		}
	}()
	select {
	case <-got:
		return nil
	case <-ctx.Done():
		close(abandoned)
		return ctx.Err()
	}
}

// unlock releases the mutex.
func (m *ctxMutex) unlock() { m.mu.Unlock() }
