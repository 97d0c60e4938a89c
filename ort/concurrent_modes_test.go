package ort

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// TestConcurrentRunsWhileSwitchingModes: in every mode, goroutines Run
// while another one switches between base, A and B (Set, Revert) as fast
// as it can; in hybrid mode this supersedes rebuilds in progress. Every
// output must be exactly (bitwise) one configuration's output: the live
// kernels' or the fused model's. A mixture of two configurations matches
// neither.
func TestConcurrentRunsWhileSwitchingModes(t *testing.T) {
	requireORT(t)
	dir, m := optModelDir(t)
	concurrentSwitching(t, dir, m, optInputs(t, 1, 8), modeCases)
}

// TestConcurrentRunsWhileSwitchingPacked is
// TestConcurrentRunsWhileSwitchingModes for a packed session (on a model
// it does not fall back on).
func TestConcurrentRunsWhileSwitchingPacked(t *testing.T) {
	requireORT(t)
	requirePackedPlatform(t)
	dir, m := packedModelDir(t)
	concurrentSwitching(t, dir, m, packedInputs(t, 3, 8), []modeCase{{"packed", Options{Mode: ModePacked}}})
}

// concurrentSwitching runs the concurrency check of
// TestConcurrentRunsWhileSwitchingModes on the exported model dir (whose
// outputs are Y and Z) for each case.
func concurrentSwitching(t *testing.T, dir string, m *export.Manifest, in map[string]*tensor.Tensor, cases []modeCase) {
	A := patch.Default(randomAdapter(t, m, 0.05, 21))
	B := patch.Default(randomAdapter(t, m, 0.05, 22))
	configs := [][]patch.Config{nil, {A}, {B}}

	// Allowed outputs: per configuration, the live session's and the fused
	// model's (bitwise); key = concatenated output bytes.
	allowed := map[string]int{}
	key := func(out map[string]*tensor.Tensor) string { return string(out["Y"].Data) + string(out["Z"].Data) }
	live := mustOpen(t, dir, &Options{Mode: ModeLive, IntraOpThreads: 1})
	for i, c := range configs {
		if err := live.Set(context.Background(), c...); err != nil {
			t.Fatal(err)
		}
		allowed[key(mustRun(t, live, in))] = i
		allowed[key(fusedOutputs(t, dir, c, &Options{IntraOpThreads: 1}, in))] = i
	}
	if len(allowed) < len(configs) {
		t.Fatal("configurations are not distinguishable")
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := c.opts
			opts.IntraOpThreads = 1
			s := mustOpen(t, dir, &opts)
			if c.opts.Mode != ModeDefault && s.Mode() != c.opts.Mode {
				t.Fatalf("opened as %v (fallback: %s)", s.Mode(), s.FallbackReason())
			}
			mode := s.Mode()
			nSwitches, workers := 60, 4
			if testing.Short() {
				nSwitches = 15
			}
			if os.Getenv("SHIRA_STRESS") != "" { // the full stress run: 8 goroutines × 1 000 switches
				nSwitches, workers = 1000, 8
			}
			var stop atomic.Bool
			var switches int
			var switchErr error
			var sw sync.WaitGroup
			sw.Add(1)
			go func() {
				defer sw.Done()
				defer stop.Store(true)
				for i := 0; i < nSwitches; i++ {
					var err error
					if c := configs[i%len(configs)]; c == nil {
						err = s.Revert(context.Background())
					} else {
						err = s.Set(context.Background(), c...)
					}
					if err != nil {
						switchErr = err
						return
					}
					switches++
				}
			}()
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			seen := make([][3]int, workers)
			for g := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for !stop.Load() {
						out, err := s.Run(context.Background(), in)
						if err != nil {
							errs <- err
							return
						}
						c, ok := allowed[key(out)]
						if !ok {
							errs <- fmt.Errorf("worker %d: output matches no single configuration", g)
							return
						}
						seen[g][c]++
					}
				}()
			}
			sw.Wait()
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if switchErr != nil {
				t.Fatal(switchErr)
			}
			if mode != ModeLive {
				waitBaked(t, s)
			}
			t.Logf("%d switches; runs per worker that saw [base A B]: %v", switches, seen)
		})
	}
}
