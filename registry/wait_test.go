package registry

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/testutil"
	"github.com/shira-ort/shira-ort/models"
	"github.com/shira-ort/shira-ort/tensor"
)

// gatedLibrary returns a library over the tiny model with adapter "a"
// registered, whose opens announce themselves on entered and wait for
// gate; opened receives each adapter the open made.
func gatedLibrary(t *testing.T, openErr error) (l *Library, entered chan struct{}, gate chan struct{}, opened chan *adapter.Adapter) {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "tiny.onnx")
	if err := os.WriteFile(src, models.Tiny, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := export.Expose(t.Context(), src, filepath.Join(dir, "x"), export.Options{}); err != nil {
		t.Fatal(err)
	}
	m, err := export.Open(filepath.Join(dir, "x"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	tt, err := adapter.NewTensor("fc1.weight", tensor.Float32, []int64{16, 32}, []uint32{1, 2}, []float32{1, 2}, tensor.Float32)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "a.shira")
	if err := adapter.Write(path, &adapter.Adapter{Name: "a", DefaultAlpha: 1, Tensors: []adapter.Tensor{tt}}); err != nil {
		t.Fatal(err)
	}
	entered, gate, opened = make(chan struct{}, 16), make(chan struct{}), make(chan *adapter.Adapter, 16)
	testutil.Replace(t, &openAdapter, func(p string) (*adapter.Adapter, error) {
		entered <- struct{}{}
		<-gate
		if openErr != nil {
			return nil, openErr
		}
		a, err := adapter.Open(p)
		if err == nil {
			opened <- a
		}
		return a, err
	})
	l, err = New(Options{Model: m, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if err := l.Register(t.Context(), "a", path); err != nil {
		t.Fatal(err)
	}
	return l, entered, gate, opened
}

// acquireAsync runs Acquire(ctx, "a") in a goroutine.
func acquireAsync(l *Library, ctx context.Context, wg *sync.WaitGroup) (res chan *adapter.Adapter, errs chan error) {
	res, errs = make(chan *adapter.Adapter, 1), make(chan error, 1)
	wg.Go(func() {
		a, err := l.Acquire(ctx, "a")
		res <- a
		errs <- err
	})
	return res, errs
}

// TestWaiters checks that Acquires arriving during an open wait for it
// (or for their context) and share its adapter.
func TestWaiters(t *testing.T) {
	l, entered, gate, opened := gatedLibrary(t, nil)
	var wg sync.WaitGroup
	first, firstErr := acquireAsync(l, context.Background(), &wg)
	<-entered // the open is under way
	ctx, cancel := context.WithCancel(context.Background())
	_, cancelledErr := acquireAsync(l, ctx, &wg)
	var others []chan *adapter.Adapter
	for range 3 {
		r, _ := acquireAsync(l, context.Background(), &wg)
		others = append(others, r)
	}
	cancel()
	if err := <-cancelledErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	close(gate)
	wg.Wait()
	if err := <-firstErr; err != nil {
		t.Fatal(err)
	}
	a := <-first
	for _, r := range others {
		if b := <-r; b != a {
			t.Fatal("a waiter got another adapter")
		}
	}
	if len(opened) != 1 {
		t.Fatalf("%d opens", len(opened))
	}
	if s := l.Stats(); s.Misses != 1 || s.Hits != 3 || s.Open != 1 || s.InUse != 1 {
		t.Fatalf("%+v", s)
	}
	if l.Names()[0].InUse != 4 {
		t.Fatalf("%+v", l.Names())
	}
	for range 4 {
		l.Release(a)
	}
}

// TestWaitersShareFailure checks that a failed open fails the Acquires
// waiting for it, and that nothing is kept.
func TestWaitersShareFailure(t *testing.T) {
	boom := errors.New("boom")
	l, entered, gate, _ := gatedLibrary(t, boom)
	var wg sync.WaitGroup
	_, firstErr := acquireAsync(l, context.Background(), &wg)
	<-entered
	_, waiterErr := acquireAsync(l, context.Background(), &wg)
	close(gate)
	wg.Wait()
	for _, ch := range []chan error{firstErr, waiterErr} {
		if err := <-ch; !errors.Is(err, boom) || errors.Is(err, ErrInvalidAdapter) {
			t.Fatalf("got %v, want the open's error", err)
		}
	}
	if s := l.Stats(); s.Open != 0 || s.InUse != 0 || s.Misses < 1 || s.Misses > 2 || s.Hits != 0 {
		t.Fatalf("%+v", s)
	}
}

// TestUnregisterDuringOpen checks that an adapter unregistered while it is
// being opened is closed and not handed out.
func TestUnregisterDuringOpen(t *testing.T) {
	l, entered, gate, opened := gatedLibrary(t, nil)
	var wg sync.WaitGroup
	_, errs := acquireAsync(l, context.Background(), &wg)
	<-entered
	if err := l.Unregister("a"); err != nil {
		t.Fatal(err)
	}
	close(gate)
	wg.Wait()
	if err := <-errs; !errors.Is(err, ErrNotFound) {
		t.Fatalf("got %v, want ErrNotFound", err)
	}
	if a := <-opened; !a.Closed() {
		t.Fatal("the adapter opened for an unregistered name stayed open")
	}
	if s := l.Stats(); s.Open != 0 || s.Registered != 0 || s.InUse != 0 {
		t.Fatalf("%+v", s)
	}
}

// TestCloseDuringOpen checks that Close waits for an open in progress,
// which then fails with ErrClosed and keeps nothing.
func TestCloseDuringOpen(t *testing.T) {
	l, entered, gate, opened := gatedLibrary(t, nil)
	var wg sync.WaitGroup
	_, errs := acquireAsync(l, context.Background(), &wg)
	<-entered
	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	// Close must not return before the open ends.
	select {
	case err := <-closed:
		t.Fatalf("Close returned during an open: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(gate)
	wg.Wait()
	if err := <-errs; !errors.Is(err, ErrClosed) {
		t.Fatalf("got %v, want ErrClosed", err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if a := <-opened; !a.Closed() {
		t.Fatal("the adapter opened during Close stayed open")
	}
	if s := l.Stats(); s.Open != 0 || s.InUse != 0 {
		t.Fatalf("%+v", s)
	}
}
