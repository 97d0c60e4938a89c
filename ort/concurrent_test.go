package ort

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/patch"

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
		ins := make([]map[string]*tensor.Tensor, workers)
		for g := range ins {
			ins[g] = mlpInput(t, g+1, g) // may t.Fatal: not in the goroutines
		}
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for g := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				in := ins[g]
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

	// 400 switches while the workers Run
	seen := runAndClassify(t, s, in, [][]byte{wantA, wantB}, 4, 200, func(ranSince func()) error {
		for i := range 400 {
			if i%2 == 0 {
				install(confB)
			} else {
				install(confA)
			}
			if i%40 == 0 {
				ranSince() // let the Runs see this configuration
			}
		}
		return nil
	})
	t.Logf("runs per worker that saw [A B]: %v", seen)
	requireBoth(t, seen)
}

// TestConcurrentRunsAndSets: as TestConcurrentRunsAndSwitches, but the
// switches go through Session.Set (with adapters touching every weight),
// in every mode: each Run's output is exactly configuration A's or B's.
func TestConcurrentRunsAndSets(t *testing.T) {
	requireORT(t)
	dir, m := optModelDir(t)
	in := optInputs(t, 2, 5)
	A := patch.Default(randomAdapter(t, m, 0.2, 1))
	B := patch.Default(randomAdapter(t, m, 0.2, 2))
	for _, mode := range []Mode{ModeLive, ModeBaked, ModeHybrid} {
		t.Run(mode.String(), func(t *testing.T) {
			s := mustOpen(t, dir, &Options{Mode: mode, IntraOpThreads: 1, RebuildDelay: -1})
			// each configuration's output, in both of hybrid's phases
			var want [][]byte
			for _, c := range []patch.Config{A, B} {
				if err := s.Set(context.Background(), c); err != nil {
					t.Fatal(err)
				}
				want = append(want, mustRun(t, s, in)["Z"].Data)
				if mode == ModeHybrid {
					if err := s.WaitBaked(context.Background()); err != nil {
						t.Fatal(err)
					}
					want = append(want, mustRun(t, s, in)["Z"].Data)
				}
			}
			// 20 switches while the workers Run
			seen := runAndClassify(t, s, in, want, 3, 60, func(ranSince func()) error {
				for i := range 20 {
					c := A
					if i%2 == 0 {
						c = B
					}
					if err := s.Set(context.Background(), c); err != nil {
						return err
					}
					ranSince() // let the Runs see this configuration
				}
				return nil
			})
			t.Logf("runs per worker per expected output: %v", seen)
			// A and B (either phase) must both have been observed
			byConf := make([][2]int, len(seen))
			for g, row := range seen {
				for k, n := range row {
					byConf[g][k*2/len(want)] += n
				}
			}
			requireBoth(t, byConf)
		})
	}
}

// runAndClassify runs s from workers goroutines and, once every worker
// has finished a Run, calls switcher in another; the workers go on until
// switcher has returned and each has done iters Runs, so the switches
// overlap the Runs. switcher may call ranSince, which waits until some
// Run has finished after the call (a switch then cannot all happen
// between two Runs). It counts per worker which of want each output
// equals. An output equal to none of them (a mixed configuration), an
// error of a Run or of switcher fails the test.
func runAndClassify(t *testing.T, s *Session, in map[string]*tensor.Tensor, want [][]byte, workers, iters int, switcher func(ranSince func()) error) [][]int {
	t.Helper()
	out := "Y"
	for name := range mustRun(t, s, in) {
		if name == "Z" {
			out = "Z"
		}
	}
	var wg, started sync.WaitGroup
	started.Add(workers)
	switched := make(chan struct{})
	var runs atomic.Int64 // Runs finished
	ranSince := func() {
		n := runs.Load()
		for deadline := time.Now().Add(10 * time.Second); runs.Load() <= n+int64(workers) && time.Now().Before(deadline); {
			time.Sleep(50 * time.Microsecond)
		}
	}
	errs := make(chan error, workers+1)
	seen := make([][]int, workers)
	for g := range workers {
		seen[g] = make([]int, len(want))
		wg.Go(func() {
			for i := 0; i < iters || !closed(switched); i++ {
				res, err := s.Run(context.Background(), in)
				runs.Add(1)
				if i == 0 {
					started.Done()
				}
				if err != nil {
					errs <- err
					return
				}
				k := slices.IndexFunc(want, func(w []byte) bool { return bytes.Equal(res[out].Data, w) })
				if k < 0 {
					errs <- fmt.Errorf("worker %d saw an output of no single configuration (a mixed one)", g)
					return
				}
				seen[g][k]++
			}
		})
	}
	go func() {
		defer close(switched)
		started.Wait()
		if err := switcher(ranSince); err != nil {
			errs <- fmt.Errorf("switching: %w", err)
		}
	}()
	wg.Wait()
	<-switched
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return seen
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// requireBoth fails unless both configurations were observed by some
// worker: a test that never saw a switch proves nothing.
func requireBoth[T ~[]int | ~[2]int](t *testing.T, seen []T) {
	t.Helper()
	var a, b int
	for _, row := range seen {
		a += row[0]
		b += row[1]
	}
	if a == 0 || b == 0 {
		t.Fatalf("only one configuration was observed (%d / %d Runs): the switches did not overlap the Runs", a, b)
	}
}
