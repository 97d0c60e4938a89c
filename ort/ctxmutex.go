package ort

import "context"

// ctxMutex is a mutex whose Lock can give up when a context is done. The
// zero value is not usable: call init first.
type ctxMutex struct{ ch chan struct{} }

func (m *ctxMutex) init() { m.ch = make(chan struct{}, 1) }

// lock waits for the mutex.
func (m *ctxMutex) lock() { m.ch <- struct{}{} }

// lockCtx waits for the mutex or for ctx; it returns ctx.Err() without
// the mutex when ctx is done first.
func (m *ctxMutex) lockCtx(ctx context.Context) error {
	select {
	case m.ch <- struct{}{}:
		return nil
	default:
	}
	select {
	case m.ch <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// unlock releases the mutex.
func (m *ctxMutex) unlock() { <-m.ch }
