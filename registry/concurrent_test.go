package registry_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/registry"
)

// TestConcurrent runs Acquire, Release, Unregister and Register from many
// goroutines (run it with -race): every adapter handed out stays readable
// until released, the bound on unused open adapters holds at every
// instant, and after Close and the last Release everything is unmapped
// and no goroutine is left.
func TestConcurrent(t *testing.T) {
	m := tinyModel(t)
	dir := t.TempDir()
	before := runtime.NumGoroutine()
	const maxOpen = 4
	l, err := registry.New(registry.Options{Model: m, MaxOpen: maxOpen, Logger: quiet, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	const stable, churn = 24, 8
	paths := map[string]string{}
	for i := range stable + churn {
		name := fmt.Sprintf("s%02d", i)
		if i >= stable {
			name = fmt.Sprintf("c%02d", i-stable)
		}
		paths[name] = writeFile(t, dir, name+".shira", encode(t, tinyAdapter(t, m, 4+i, 0.25+float32(i))))
		register(t, l, name, paths[name])
	}
	var (
		mu        sync.Mutex
		handedOut = map[*adapter.Adapter]bool{}
		successes atomic.Int64
		attempts  atomic.Int64
		stop      = make(chan struct{})
		wg        sync.WaitGroup
		bad       = make(chan error, 100)
	)
	report := func(err error) {
		select {
		case bad <- err:
		default:
		}
	}
	// The bound, checked continuously.
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if s := l.Stats(); s.Open-s.InUse > maxOpen || s.InUse < 0 || s.OpenBytes < 0 {
				report(fmt.Errorf("bound broken: %+v", s))
			}
			runtime.Gosched()
		}
	})
	// Churn: unregister and register again the c* names, and add and
	// remove fresh ones.
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(1, 2))
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprintf("c%02d", rng.IntN(churn))
			if err := l.Unregister(name); err != nil && !errors.Is(err, registry.ErrNotFound) {
				report(err)
			}
			if err := l.Register(context.Background(), name, paths[name]); err != nil && !errors.Is(err, registry.ErrExists) {
				report(err)
			}
			fresh := fmt.Sprintf("fresh%d", i)
			if err := l.Register(context.Background(), fresh, paths["s00"]); err != nil {
				report(err)
			}
			if a, err := l.Acquire(context.Background(), fresh); err == nil {
				l.Release(a)
			} else {
				report(err)
			}
			if err := l.Unregister(fresh); err != nil {
				report(err)
			}
		}
	})
	var workers sync.WaitGroup
	for w := range 6 {
		workers.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			var held []*adapter.Adapter
			for range 400 {
				var name string
				if rng.IntN(4) == 0 {
					name = fmt.Sprintf("c%02d", rng.IntN(churn))
				} else {
					name = fmt.Sprintf("s%02d", rng.IntN(stable))
				}
				attempts.Add(1)
				a, err := l.Acquire(context.Background(), name)
				if err != nil {
					if !(errors.Is(err, registry.ErrNotFound) && name[0] == 'c') {
						report(fmt.Errorf("Acquire(%s): %w", name, err))
					}
					continue
				}
				successes.Add(1)
				mu.Lock()
				handedOut[a] = true
				mu.Unlock()
				held = append(held, a)
				// Every held adapter is still mapped and usable.
				for _, h := range held {
					if h.Closed() {
						report(fmt.Errorf("a held adapter was closed"))
					}
					if err := h.Retain(); err != nil {
						report(err)
						continue
					}
					if v, err := h.Tensors[0].ValuesFloat32(); err != nil || len(v) != h.NNZ() {
						report(fmt.Errorf("values: %v", err))
					}
					h.Release()
				}
				for len(held) > rng.IntN(4) {
					k := rng.IntN(len(held))
					l.Release(held[k])
					held = append(held[:k], held[k+1:]...)
				}
			}
			for _, h := range held {
				l.Release(h)
			}
		})
	}
	workers.Wait()
	close(stop)
	wg.Wait()
	close(bad)
	for err := range bad {
		t.Error(err)
	}

	s := l.Stats()
	if s.InUse != 0 || s.Open > maxOpen || s.Hits+s.Misses < successes.Load() {
		t.Fatalf("%+v after %d successful Acquires of %d", s, successes.Load(), attempts.Load())
	}
	t.Logf("%+v after %d successful Acquires of %d", s, successes.Load(), attempts.Load())

	// Close while some are held: they stay usable until released.
	held := []*adapter.Adapter{acquire(t, l, "s00"), acquire(t, l, "s01")}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, h := range held {
		if h.Closed() {
			t.Fatal("a held adapter was closed by Close")
		}
		l.Release(h)
	}
	for a := range handedOut {
		if !a.Closed() {
			t.Fatalf("adapter %q still open after Close and the last Release", a.Name)
		}
	}
	if s := l.Stats(); s.Open != 0 || s.OpenBytes != 0 || s.InUse != 0 {
		t.Fatalf("after Close: %+v", s)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines left (%d before):\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// TestAcquireCancelled checks that an Acquire with an ended context
// opens nothing.
func TestAcquireCancelled(t *testing.T) {
	m := tinyModel(t)
	l := newLibrary(t, registry.Options{Model: m})
	register(t, l, "a", writeFile(t, t.TempDir(), "a.shira", encode(t, tinyAdapter(t, m, 4, 0.5))))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := l.Acquire(ctx, "a"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Acquire: %v", err)
	}
	if s := l.Stats(); s.Misses != 0 || s.Open != 0 {
		t.Fatalf("a cancelled Acquire opened: %+v", s)
	}
}
