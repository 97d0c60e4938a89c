package ort

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

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

	// 400 switches, while the workers Run (at least until the last)
	switched := make(chan struct{})
	go func() {
		defer close(switched)
		for i := range 400 {
			if i%2 == 0 {
				install(confB)
			} else {
				install(confA)
			}
		}
	}()
	seen := runAndClassify(t, s, in, [][]byte{wantA, wantB}, 4, 200, switched)
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
			// 20 switches, while the workers Run (at least until the last)
			switched := make(chan struct{})
			switchErr := make(chan error, 1)
			go func() {
				defer close(switchErr)
				defer close(switched)
				for i := range 20 {
					c := A
					if i%2 == 0 {
						c = B
					}
					if err := s.Set(context.Background(), c); err != nil {
						switchErr <- err
						return
					}
				}
			}()
			seen := runAndClassify(t, s, in, want, 3, 60, switched)
			if err := <-switchErr; err != nil {
				t.Fatal(err)
			}
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

// runAndClassify runs s from workers goroutines, iters times each and, when
// until is not nil, on until it is closed; it counts per worker which of
// want each output equals. An output equal to none of them (a mixed
// configuration) or an error fails the test.
func runAndClassify(t *testing.T, s *Session, in map[string]*tensor.Tensor, want [][]byte, workers, iters int, until <-chan struct{}) [][]int {
	t.Helper()
	out := "Y"
	for name := range mustRun(t, s, in) {
		if name == "Z" {
			out = "Z"
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	seen := make([][]int, workers)
	for g := range workers {
		seen[g] = make([]int, len(want))
		wg.Go(func() {
			for i := 0; i < iters || (until != nil && !closed(until)); i++ {
				res, err := s.Run(context.Background(), in)
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
	wg.Wait()
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
