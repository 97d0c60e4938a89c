package ort

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// slowModel writes (and exports) a model that takes about a second per Run
// of slowInput on this machine's two cores: X [batch, 512] through 1 000
// MatMuls with one shared 512x512 weight W. It returns the plain model's path and the
// exported directory.
func slowModel(tb testing.TB) (string, string) {
	tb.Helper()
	const n, layers = 512, 1000
	rng := rand.New(rand.NewPCG(5, 6))
	w := make([]float32, n*n)
	for i := range w {
		w[i] = (rng.Float32()*2 - 1) / n // keeps the activations bounded
	}
	b := onnxwire.NewBuilder()
	b.AddInput("X", tensor.Float32, []int64{-1, n}, "batch")
	b.AddInitializer(onnxwire.NewTensor("W", tensor.Float32, []int64{n, n}, tensor.Bytes(w)))
	prev := "X"
	for i := range layers {
		out := "h" + strconv.Itoa(i)
		if i == layers-1 {
			out = "Y"
		}
		b.AddNode("mm"+strconv.Itoa(i), "MatMul", []string{prev, "W"}, []string{out})
		prev = out
	}
	b.AddOutput("Y", tensor.Float32, []int64{-1, n}, "batch")
	src := filepath.Join(tb.TempDir(), "slow.onnx")
	if err := b.WriteFile(src); err != nil {
		tb.Fatal(err)
	}
	dir := filepath.Join(tb.TempDir(), "slow")
	if _, err := export.Expose(context.Background(), src, dir, export.Options{}); err != nil {
		tb.Fatal(err)
	}
	return src, dir
}

func slowInput(tb testing.TB) map[string]*tensor.Tensor {
	return map[string]*tensor.Tensor{"X": mustF32(tb, []int64{256, 512}, ramp(256*512, 3))}
}

// TestRunCancel cancels Runs in progress (by cancel and by deadline) on a
// live session, a baked one and a plain one: each returns promptly with
// an error matching the context's, and the session keeps working (the
// pooled run options are reset).
func TestRunCancel(t *testing.T) {
	requireORT(t)
	src, dir := slowModel(t)
	in := slowInput(t)
	for _, c := range []struct {
		name string
		open func() *Session
	}{
		{"live", func() *Session { return mustOpen(t, dir, &Options{Mode: ModeLive}) }},
		{"baked", func() *Session { return mustOpen(t, dir, &Options{Mode: ModeBaked}) }},
		{"plain", func() *Session { return mustOpenModel(t, src, nil) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := c.open()
			start := time.Now()
			want := mustRun(t, s, in)
			full := time.Since(start)
			t.Logf("a whole Run takes %v", full)

			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(full/20, cancel)
			start = time.Now()
			_, err := s.Run(ctx, in)
			took := time.Since(start)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("cancelled Run = %v, want context.Canceled", err)
			}
			if took > full/2 {
				t.Errorf("cancelled Run took %v of a full Run's %v: not terminated", took, full)
			}

			ctx, cancel = context.WithTimeout(context.Background(), full/20)
			defer cancel()
			if _, err := s.Run(ctx, in); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Run past its deadline = %v, want context.DeadlineExceeded", err)
			}

			done, cancel := context.WithCancel(context.Background())
			cancel()
			if _, err := s.Run(done, in); !errors.Is(err, context.Canceled) {
				t.Fatalf("Run with a cancelled context = %v", err)
			}

			// the session still runs, to completion, with a cancellable context
			ctx, cancel = context.WithCancel(context.Background())
			defer cancel()
			got, err := s.Run(ctx, in)
			if err != nil {
				t.Fatalf("Run after cancellations: %v", err)
			}
			if !sameOutputs(got, want) {
				t.Fatal("outputs changed after cancelled Runs")
			}
		})
	}
}

// TestCloseWithRunsInFlight closes a session while Runs are computing:
// Close waits for them (they finish with their outputs), and every call
// after Close returns ErrClosed. Run under -race.
func TestCloseWithRunsInFlight(t *testing.T) {
	requireORT(t)
	src, dir := slowModel(t)
	in := slowInput(t)
	for _, c := range []struct {
		name string
		open func() (*Session, error)
	}{
		{"live", func() (*Session, error) { return Open(context.Background(), dir, &Options{Mode: ModeLive}) }},
		{"hybrid", func() (*Session, error) { return Open(context.Background(), dir, &Options{Mode: ModeHybrid}) }},
		{"plain", func() (*Session, error) { return OpenModel(context.Background(), src, nil) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := c.open()
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			started := make(chan struct{}, 2)
			errs := make([]error, 2)
			for i := range errs {
				wg.Go(func() {
					started <- struct{}{}
					_, errs[i] = s.Run(context.Background(), in)
				})
			}
			for range errs {
				<-started
			}
			time.Sleep(100 * time.Millisecond) // the Runs are computing
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil && !errors.Is(err, ErrClosed) {
					t.Errorf("Run %d in flight at Close: %v, want success or ErrClosed", i, err)
				}
			}
			if _, err := s.Run(context.Background(), in); !errors.Is(err, ErrClosed) {
				t.Errorf("Run after Close = %v, want ErrClosed", err)
			}
			if s.patcher != nil || s.cur.Load() != nil {
				t.Error("Close left ORT resources behind")
			}
			if c.name != "plain" {
				if err := s.Revert(context.Background()); !errors.Is(err, ErrClosed) {
					t.Errorf("Revert after Close = %v, want ErrClosed", err)
				}
				if _, err := s.Weight("W"); !errors.Is(err, ErrClosed) {
					t.Errorf("Weight after Close = %v, want ErrClosed", err)
				}
			}
			if err := s.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
		})
	}
}

// TestClosedActiveAdapter closes adapters (mapped from files) while a
// session has them active: Runs, switches and reverts keep working on
// valid memory, a closed adapter is refused, and the mapping goes once
// the session lets go. Every mode.
func TestClosedActiveAdapter(t *testing.T) {
	requireORT(t)
	dir, m := optModelDir(t)
	in := optInputs(t, 2, 1)
	write := func(a *adapter.Adapter) *adapter.Adapter {
		p := filepath.Join(t.TempDir(), "a.shira")
		if err := adapter.Write(p, a); err != nil {
			t.Fatal(err)
		}
		o, err := adapter.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	for _, mode := range []Mode{ModeLive, ModeBaked, ModeHybrid} {
		t.Run(mode.String(), func(t *testing.T) {
			s := mustOpen(t, dir, &Options{Mode: mode, IntraOpThreads: 1})
			base := mustRun(t, s, in)
			a, b := write(randomAdapter(t, m, 0.05, 1)), write(randomAdapter(t, m, 0.05, 2))
			if err := s.Set(context.Background(), patch.Default(a)); err != nil {
				t.Fatal(err)
			}
			if mode == ModeHybrid { // compare outputs of one kind of kernels (see Mode)
				if err := s.WaitBaked(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			withA := mustRun(t, s, in)
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			if !sameOutputs(mustRun(t, s, in), withA) {
				t.Fatal("closing the active adapter changed the outputs")
			}
			if err := s.Apply(context.Background(), patch.Default(a)); !errors.Is(err, adapter.ErrClosed) {
				t.Fatalf("Apply(closed) = %v, want adapter.ErrClosed", err)
			}
			if err := s.Set(context.Background(), patch.Default(b)); err != nil { // reverts through a's indices
				t.Fatal(err)
			}
			if a.Tensors[0].Indices != nil {
				t.Error("the closed adapter stayed mapped after the session let go of it")
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			if err := s.Revert(context.Background()); err != nil {
				t.Fatal(err)
			}
			if mode == ModeHybrid {
				if err := s.WaitBaked(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			if !sameOutputs(mustRun(t, s, in), base) {
				t.Fatal("revert after closing the active adapter is not bit-exact")
			}
			if b.Tensors[0].Indices != nil {
				t.Error("b stayed mapped after Revert")
			}
			// a session closed with an adapter active lets go of it
			c := write(randomAdapter(t, m, 0.05, 3))
			if err := s.Set(context.Background(), patch.Default(c)); err != nil {
				t.Fatal(err)
			}
			c.Close()
			if c.Tensors[0].Indices == nil {
				t.Fatal("c unmapped while active")
			}
			s.Close()
			if c.Tensors[0].Indices != nil {
				t.Error("Close of the session kept the closed adapter mapped")
			}
		})
	}
}

// TestSwitchContext: a switch whose context is already done changes
// nothing; a baked switch cancelled during its rebuild keeps the previous
// configuration.
func TestSwitchContext(t *testing.T) {
	requireORT(t)
	dir, m := optModelDir(t)
	in := optInputs(t, 2, 1)
	for _, mode := range []Mode{ModeLive, ModeBaked, ModeHybrid} {
		t.Run(mode.String(), func(t *testing.T) {
			s := mustOpen(t, dir, &Options{Mode: mode, IntraOpThreads: 1})
			base := mustRun(t, s, in)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			a := randomAdapter(t, m, 0.05, 1)
			if err := s.Set(ctx, patch.Default(a)); !errors.Is(err, context.Canceled) {
				t.Fatalf("Set with a cancelled context = %v", err)
			}
			if len(s.Active()) != 0 || !sameOutputs(mustRun(t, s, in), base) {
				t.Fatal("a cancelled Set changed the configuration")
			}
		})
	}
	t.Run("baked rebuild", func(t *testing.T) {
		s := mustOpen(t, dir, &Options{Mode: ModeBaked, IntraOpThreads: 1})
		base := mustRun(t, s, in)
		ctx, cancel := context.WithCancel(context.Background())
		failBakedBuildOnce(t, func() error { cancel(); return nil }) // cancel during the build
		if err := s.Set(ctx, patch.Default(randomAdapter(t, m, 0.05, 1))); !errors.Is(err, context.Canceled) {
			t.Fatalf("Set cancelled during the rebuild = %v", err)
		}
		if len(s.Active()) != 0 || !sameOutputs(mustRun(t, s, in), base) {
			t.Fatal("a Set cancelled during its rebuild changed the configuration")
		}
	})
}

// failBakedBuildOnce installs fn as the baked-build hook for the rest of
// the test.
func failBakedBuildOnce(t *testing.T, fn func() error) {
	old := failBakedBuild
	failBakedBuild = fn
	t.Cleanup(func() { failBakedBuild = old })
}

// TestFingerprintMismatch: an adapter made for another model is refused
// with an error naming the way around it, and SkipFingerprintCheck
// applies it.
func TestFingerprintMismatch(t *testing.T) {
	requireORT(t)
	dir, m := optModelDir(t)
	a := randomAdapter(t, m, 0.05, 1)
	a.ModelFingerprint = strings.Repeat("ab", 32)
	s := mustOpen(t, dir, &Options{Mode: ModeLive})
	err := s.Set(context.Background(), patch.Default(a))
	if !errors.Is(err, patch.ErrFingerprint) || !strings.Contains(err.Error(), "SkipFingerprintCheck") {
		t.Fatalf("Set(adapter for another model) = %v, want ErrFingerprint naming SkipFingerprintCheck", err)
	}
	forced := mustOpen(t, dir, &Options{Mode: ModeLive, SkipFingerprintCheck: true})
	if err := forced.Set(context.Background(), patch.Default(a)); err != nil {
		t.Fatalf("Set with SkipFingerprintCheck: %v", err)
	}
}

// TestWeightFileChangedUnderSession truncates, then rewrites, the weight
// file of open sessions (as `truncate` and `cp` would, from this process):
// Runs, switches and reverts go on with the weights the session had,
// exactly, without a signal, in every mode.
func TestWeightFileChangedUnderSession(t *testing.T) {
	requireORT(t)
	for _, mode := range []Mode{ModeLive, ModeBaked, ModeHybrid} {
		for _, change := range []string{"truncate", "rewrite"} {
			t.Run(mode.String()+"/"+change, func(t *testing.T) {
				dir, m := optModelDir(t)
				in := optInputs(t, 2, 1)
				s := mustOpen(t, dir, &Options{Mode: mode, IntraOpThreads: 1})
				base := mustRun(t, s, in)
				A := patch.Default(randomAdapter(t, m, 0.05, 1))
				if err := s.Set(context.Background(), A); err != nil {
					t.Fatal(err)
				}
				withA := mustRun(t, s, in)
				if mode == ModeHybrid {
					if err := s.WaitBaked(context.Background()); err != nil {
						t.Fatal(err)
					}
					withA = mustRun(t, s, in)
				}
				wf := filepath.Join(dir, export.WeightsFile)
				changed := make(chan error, 1)
				go func() {
					if change == "truncate" {
						changed <- os.Truncate(wf, 0)
					} else {
						changed <- os.WriteFile(wf, make([]byte, 1<<20), 0o644)
					}
				}()
				select {
				case err := <-changed:
					if err != nil {
						t.Fatal(err)
					}
				case <-time.After(20 * time.Second):
					t.Fatal("changing the weight file blocked for 20 s: the lease break was not served")
				}
				// every page the session reads: SIGBUS here if it followed the file
				if got := mustRun(t, s, in); !sameOutputs(got, withA) {
					t.Fatal("the outputs changed with the weight file")
				}
				if err := s.Revert(context.Background()); err != nil {
					t.Fatal(err)
				}
				if err := s.Set(context.Background(), A); err != nil {
					t.Fatal(err)
				}
				if err := s.Revert(context.Background()); err != nil {
					t.Fatal(err)
				}
				if mode == ModeHybrid {
					if err := s.WaitBaked(context.Background()); err != nil {
						t.Fatal(err)
					}
				}
				if !sameOutputs(mustRun(t, s, in), base) {
					t.Fatal("revert after the weight file changed is not bit-exact")
				}
				for _, e := range m.Tensors {
					if _, err := s.Weight(e.Name); err != nil {
						t.Fatal(err)
					}
				}
			})
		}
	}
}

// TestCheckFinite: with Options.CheckFinite a configuration that would
// make weights non-finite is refused and changes nothing; without it, it
// is applied (and the outputs are not finite).
func TestCheckFinite(t *testing.T) {
	requireORT(t)
	dir, m := optModelDir(t)
	in := optInputs(t, 2, 1)
	huge := patch.Config{Adapter: randomAdapter(t, m, 0.05, 1), Alpha: 3e38}
	for _, mode := range []Mode{ModeLive, ModeBaked, ModeHybrid} {
		s := mustOpen(t, dir, &Options{Mode: mode, IntraOpThreads: 1, CheckFinite: true})
		base := mustRun(t, s, in)
		if err := s.Set(context.Background(), huge); !errors.Is(err, patch.ErrNonFinite) {
			t.Fatalf("%v: Set(alpha 3e38) = %v, want patch.ErrNonFinite", mode, err)
		}
		if len(s.Active()) != 0 || !sameOutputs(mustRun(t, s, in), base) {
			t.Fatalf("%v: a refused configuration changed the session", mode)
		}
	}
	s := mustOpen(t, dir, &Options{Mode: ModeLive, IntraOpThreads: 1})
	if err := s.Set(context.Background(), huge); err != nil {
		t.Fatalf("without CheckFinite: %v", err)
	}
}
