package ort

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/shira-ort/shira-ort/tensor"
)

// TestConcurrentRuns: many goroutines Run one session at once, each with
// its own inputs, and get exactly the single-threaded results.
func TestConcurrentRuns(t *testing.T) {
	requireORT(t)
	for _, b := range allBindings {
		s := mustOpen(t, testdata("mlp"), &Options{Mode: ModeLive, WeightBinding: b})
		const workers, iters = 8, 40
		want := make([][]byte, workers)
		for g := range want {
			want[g] = mustRun(t, s, mlpInput(t, g+1, g))["Y"].Data
		}
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for g := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				in := mlpInput(t, g+1, g)
				for range iters {
					out, err := s.Run(context.Background(), in)
					if err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(out["Y"].Data, want[g]) {
						errs <- fmt.Errorf("%v worker %d: result differs from the single-threaded one", b, g)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
}

// TestConcurrentRunsAndSwitches: while goroutines Run, another one switches
// every weight between two configurations under the session's write lock
// (what Set does). Every Run must see exactly one configuration: its
// output equals one of the two single-configuration outputs bit for bit.
func TestConcurrentRunsAndSwitches(t *testing.T) {
	requireORT(t)
	s := mustOpen(t, testdata("mlp"), &Options{Mode: ModeLive})
	in := mlpInput(t, 4, 9)
	confA := map[string][]float32{}
	confB := map[string][]float32{}
	for _, w := range s.Weights() {
		a := weightF32(t, s, w.Name)
		b := append([]float32(nil), a...)
		for i := range b {
			b[i] = -b[i] * 1.5
		}
		confA[w.Name], confB[w.Name] = a, b
	}
	install := func(conf map[string][]float32) {
		s.mu.Lock()
		defer s.mu.Unlock()
		for name, v := range conf {
			copy(tensor.Float32s(liveWeight(s, name)), v)
		}
	}
	wantA := mustRun(t, s, in)["Y"].Data
	install(confB)
	wantB := mustRun(t, s, in)["Y"].Data
	install(confA)
	if bytes.Equal(wantA, wantB) {
		t.Fatal("the two configurations give the same output")
	}

	stop := make(chan struct{})
	var switcher sync.WaitGroup
	switcher.Add(1)
	go func() {
		defer switcher.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				install(confB)
			} else {
				install(confA)
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	seen := make([][2]int, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				out, err := s.Run(context.Background(), in)
				if err != nil {
					errs <- err
					return
				}
				switch y := out["Y"].Data; {
				case bytes.Equal(y, wantA):
					seen[g][0]++
				case bytes.Equal(y, wantB):
					seen[g][1]++
				default:
					errs <- fmt.Errorf("worker %d saw a mixed configuration", g)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	switcher.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("runs per worker that saw [A B]: %v", seen)
}
