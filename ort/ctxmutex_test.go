package ort

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestCtxMutex: lockCtx gives up when its context ends while another
// holder has the lock, without keeping the lock; otherwise it waits.
func TestCtxMutex(t *testing.T) {
	var m ctxMutex
	if err := m.lockCtx(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := m.lockCtx(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("lockCtx on a held mutex = %v, want DeadlineExceeded", err)
	}
	m.unlock()
	// the abandoned waiter must not keep the lock
	done := make(chan error)
	go func() { done <- m.lockCtx(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the lock was kept by an abandoned waiter")
	}
	// a waiter gets the lock when the holder lets go
	got := make(chan struct{})
	go func() {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if err := m.lockCtx(ctx); err == nil {
			close(got)
		}
	}()
	time.Sleep(10 * time.Millisecond)
	m.unlock()
	select {
	case <-got:
		m.unlock()
	case <-time.After(10 * time.Second):
		t.Fatal("a waiting lockCtx never got the lock")
	}
}
