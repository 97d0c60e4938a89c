package sched_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/sched"
	"github.com/shira-ort/shira-ort/tensor"
)

func mustNew(t testing.TB, b sched.Backend, o sched.Options) *sched.Scheduler {
	t.Helper()
	s, err := sched.New(b, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNewOptions(t *testing.T) {
	if _, err := sched.New(nil, sched.Options{}); err == nil {
		t.Error("New(nil backend) succeeded")
	}
	for _, o := range []sched.Options{{MaxWait: -1}, {QueueLimit: -1}, {MaxBatch: -1}, {MaxConcurrent: -1}} {
		if _, err := sched.New(&fake{}, o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
}

// TestLoad runs many clients with random keys (uniform and Zipf) against
// every mode and checks every response is its own rows under its own key,
// that Switch never overlaps a Run, and that waits stay bounded.
func TestLoad(t *testing.T) {
	for _, c := range []struct {
		name       string
		exclusive  bool
		batch      int
		concurrent int
		keys       int
		zipf       bool
	}{
		{"exclusive/uniform", true, 1, 1, 6, false},
		{"exclusive/zipf", true, 1, 1, 40, true},
		{"exclusive/batch/uniform", true, 8, 1, 6, false},
		{"exclusive/batch/zipf/concurrent", true, 8, 2, 40, true},
		{"exclusive/concurrent/uniform", true, 1, 3, 4, false},
		{"shared/zipf", false, 1, 2, 40, true},
		{"shared/batch/uniform", false, 8, 2, 6, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer noLeaks(t)()
			const clients, perClient = 16, 50
			const maxWait = 20 * time.Millisecond
			f := &fake{exclusive: c.exclusive, runDelay: 200 * time.Microsecond, switchDelay: 300 * time.Microsecond}
			var maxWaited atomic.Int64
			var batches, batched atomic.Int64
			var depthMu sync.Mutex
			lastDepth := -1
			s := mustNew(t, f, sched.Options{
				Exclusive: c.exclusive, MaxWait: maxWait, MaxBatch: c.batch, MaxConcurrent: c.concurrent,
				Observer: sched.Observer{
					Waited: func(_ sched.Key, d time.Duration) {
						for {
							m := maxWaited.Load()
							if int64(d) <= m || maxWaited.CompareAndSwap(m, int64(d)) {
								return
							}
						}
					},
					Batch: func(_ sched.Key, requests, rows int) {
						batches.Add(1)
						batched.Add(int64(requests))
						if rows > c.batch && requests > 1 {
							t.Errorf("batch of %d rows > MaxBatch %d", rows, c.batch)
						}
					},
					Depth: func(n int) {
						depthMu.Lock()
						lastDepth = n
						depthMu.Unlock()
					},
				},
			})
			keys := make([]sched.Key, c.keys)
			for i := range keys {
				keys[i] = sched.KeyOf([]sched.Entry{{Name: fmt.Sprintf("adapter%d", i), Alpha: 1 + float32(i)/4}})
			}
			keys[0] = sched.Base
			var wg sync.WaitGroup
			var errs atomic.Int64
			for cl := range clients {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(cl), 1))
					zipf := rand.NewZipf(rng, 1.1, 1, uint64(c.keys-1))
					for i := range perClient {
						k := keys[rng.IntN(len(keys))]
						if c.zipf {
							k = keys[zipf.Uint64()]
						}
						rows, w := 1+rng.IntN(3), 3
						if rng.IntN(8) == 0 {
							w = 5 // a different shape: never batched with the others
						}
						id := cl*perClient + i
						in := request(id, rows, w)
						out, err := s.Run(context.Background(), k, in)
						if err == nil {
							err = verify(k, in, out)
						}
						if err != nil {
							if errs.Add(1) < 5 {
								t.Errorf("client %d request %d (%q): %v", cl, i, k, err)
							}
						}
					}
				})
			}
			wg.Wait()
			closeNow(t, s)
			f.check(t)
			st := s.Stats()
			n := int64(clients * perClient)
			if st.Submitted != n || st.Completed != n || st.Failed+st.Canceled+st.Rejected != 0 || st.QueueDepth != 0 || st.InFlight != 0 {
				t.Errorf("stats %+v, want %d submitted and completed", st, n)
			}
			if st.Runs != batches.Load() || batched.Load() != n {
				t.Errorf("%d Runs in stats, %d observed, %d requests in them", st.Runs, batches.Load(), batched.Load())
			}
			if lastDepth != 0 {
				t.Errorf("last depth observed %d, want 0", lastDepth)
			}
			if !c.exclusive && len(f.switches) != 0 {
				t.Errorf("%d switches on a shared backend", len(f.switches))
			}
			if c.concurrent == 1 && f.maxRunning > 1 {
				t.Errorf("%d Runs in flight with MaxConcurrent 1", f.maxRunning)
			}
			if c.exclusive && f.overlapped {
				t.Error("Runs of different keys overlapped on an exclusive backend")
			}
			// The wait bound: a request waits for the requests that arrived
			// before it or within MaxWait after it (a closed loop of clients
			// has at most one each waiting, and cannot submit much faster
			// than MaxWait allows), and for a Switch and the draining Runs
			// per group ahead. On a shared, loaded 2-core machine under the
			// race detector a 200µs sleep sometimes takes 100ms, so the
			// bound is typical step costs with a wide factor, plus the
			// longest hiccups, plus a fixed allowance: a correctness bound,
			// not a benchmark.
			f.mu.Lock()
			step := median(f.swTimes) + time.Duration(c.concurrent+1)*median(f.runTimes)
			hiccup := f.maxSwitch + f.maxRun
			f.mu.Unlock()
			bound := 2*maxWait + time.Duration(4*(clients+2))*step + 2*hiccup + 500*time.Millisecond
			if w := time.Duration(maxWaited.Load()); w > bound {
				t.Errorf("a request waited %v, bound %v (typical Switch+Runs %v, longest Switch+Run %v)", w, bound, step, hiccup)
			}
			t.Logf("%d Runs, %d switches, %.2f requests/Run, longest wait %v (bound %v; typical Switch+Runs %v, longest Switch+Run %v)",
				st.Runs, st.Switches, float64(n)/float64(st.Runs), time.Duration(maxWaited.Load()), bound, step, hiccup)
		})
	}
}

// TestGroupingSwitchesRarely: two keys under steady load on an exclusive
// backend switch far less often than they run.
func TestGroupingSwitchesRarely(t *testing.T) {
	defer noLeaks(t)()
	f := &fake{exclusive: true, runDelay: 100 * time.Microsecond, switchDelay: 100 * time.Microsecond}
	s := mustNew(t, f, sched.Options{Exclusive: true, MaxWait: 20 * time.Millisecond})
	var wg sync.WaitGroup
	for cl := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(cl), 2))
			for i := range 60 {
				k := sched.Key(fmt.Sprintf("k%d@1", rng.IntN(2)))
				in := request(cl*100+i, 1, 2)
				out, err := s.Run(context.Background(), k, in)
				if err == nil {
					err = verify(k, in, out)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	closeNow(t, s)
	f.check(t)
	st := s.Stats()
	if st.Switches*4 > st.Runs {
		t.Errorf("%d switches for %d Runs of 2 keys: grouping does not work", st.Switches, st.Runs)
	}
	t.Logf("%d switches for %d Runs", st.Switches, st.Runs)
}

// TestBatching: 32 clients on one key form batches, each response exactly
// its own rows.
func TestBatching(t *testing.T) {
	defer noLeaks(t)()
	f := &fake{exclusive: true, runDelay: time.Millisecond}
	s := mustNew(t, f, sched.Options{Exclusive: true, MaxBatch: 16})
	var wg sync.WaitGroup
	for cl := range 32 {
		wg.Go(func() {
			for i := range 10 {
				in := request(cl*10+i, 1+(cl+i)%2, 4)
				out, err := s.Run(context.Background(), "one@1", in)
				if err == nil {
					err = verify("one@1", in, out)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	closeNow(t, s)
	f.check(t)
	st := s.Stats()
	mean := float64(st.Completed) / float64(st.Runs)
	if mean <= 1.5 || st.Switches != 1 {
		t.Errorf("%d requests in %d Runs (%.2f per Run), %d switches; want batches and 1 switch", st.Completed, st.Runs, mean, st.Switches)
	}
	t.Logf("%.2f requests, %.2f rows per Run", mean, float64(st.Rows)/float64(st.Runs))
}

// gated returns a fake whose Runs wait for a token on gate, and a
// scheduler over it.
func gated(t *testing.T, exclusive bool, o sched.Options) (*fake, *sched.Scheduler) {
	f := &fake{exclusive: exclusive, gate: make(chan struct{}), started: make(chan runInfo, 100)}
	o.Exclusive = exclusive
	return f, mustNew(t, f, o)
}

type result struct {
	out map[string]*tensor.Tensor
	err error
}

// submit runs a request in a goroutine and returns where its result goes.
func submit(ctx context.Context, s *sched.Scheduler, key sched.Key, in map[string]*tensor.Tensor) <-chan result {
	c := make(chan result, 1)
	go func() {
		out, err := s.Run(ctx, key, in)
		c <- result{out, err}
	}()
	return c
}

// queue submits requests one at a time, each after the previous one is
// waiting, so their order is known.
func queue(t *testing.T, s *sched.Scheduler, ctx context.Context, keys ...sched.Key) []<-chan result {
	t.Helper()
	var res []<-chan result
	for i, k := range keys {
		d := s.Stats().QueueDepth
		res = append(res, submit(ctx, s, k, request(100+i, 1, 2)))
		waitFor(t, "request queued", func() bool { return s.Stats().QueueDepth == d+1 })
	}
	return res
}

func TestOrder(t *testing.T) {
	for _, c := range []struct {
		name      string
		exclusive bool
		maxWait   time.Duration
		want      string // keys of the Runs, a first
	}{
		// grouping: a is active, so its waiting request goes first,
		// then the groups in the order of their oldest request
		{"exclusive", true, time.Hour, "a a a b b c"},
		// every other group has waited MaxWait: one Run per switch, FIFO
		{"exclusive/starved", true, time.Nanosecond, "a b a c a b"},
		{"shared", false, time.Hour, "a b a c a b"},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer noLeaks(t)()
			f, s := gated(t, c.exclusive, sched.Options{MaxWait: c.maxWait})
			first := submit(context.Background(), s, "a@1", request(1, 1, 2))
			recv(t, f.started)
			rest := queue(t, s, context.Background(), "b@1", "a@1", "c@1", "a@1", "b@1")
			for range 6 {
				f.gate <- struct{}{}
			}
			for _, r := range append(rest, first) {
				if res := recv(t, r); res.err != nil {
					t.Error(res.err)
				}
			}
			closeNow(t, s)
			f.check(t)
			var got []string
			for _, k := range f.order {
				got = append(got, strings.TrimSuffix(string(k), "@1"))
			}
			if strings.Join(got, " ") != c.want {
				t.Errorf("Runs %v, want %s", got, c.want)
			}
		})
	}
}

// TestStarvationBound: a key flooded by many clients does not keep the
// backend from another key for much longer than MaxWait.
func TestStarvationBound(t *testing.T) {
	defer noLeaks(t)()
	f := &fake{exclusive: true, runDelay: 200 * time.Microsecond, switchDelay: 200 * time.Microsecond}
	const maxWait = 20 * time.Millisecond
	s := mustNew(t, f, sched.Options{Exclusive: true, MaxWait: maxWait})
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for cl := range 12 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				if _, err := s.Run(ctx, "hot@1", request(cl*100000+i, 1, 2)); err != nil && ctx.Err() == nil {
					t.Error(err)
				}
			}
		})
	}
	waitFor(t, "the hot key running", func() bool { return s.Stats().Runs > 20 })
	var worst time.Duration
	for i := range 5 {
		start := time.Now()
		in := request(i, 1, 2)
		out, err := s.Run(context.Background(), "cold@1", in)
		if err == nil {
			err = verify("cold@1", in, out)
		}
		if err != nil {
			t.Fatal(err)
		}
		worst = max(worst, time.Since(start))
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	wg.Wait()
	closeNow(t, s)
	f.check(t)
	// MaxWait, then the Run in flight, a switch and the cold Run: with a
	// wide allowance for scheduling noise (without the bound it would wait
	// until the hot clients stop, seconds later).
	if bound := maxWait + 500*time.Millisecond; worst > bound {
		t.Errorf("cold request waited %v behind a hot key, bound %v", worst, bound)
	}
	t.Logf("cold request: longest %v (MaxWait %v)", worst, maxWait)
}

func TestOverload(t *testing.T) {
	defer noLeaks(t)()
	var depths []int
	f, s := gated(t, true, sched.Options{QueueLimit: 2, Observer: sched.Observer{Depth: func(n int) { depths = append(depths, n) }}})
	first := submit(context.Background(), s, "a@1", request(1, 1, 2))
	recv(t, f.started)
	rest := queue(t, s, context.Background(), "a@1", "b@1")
	start := time.Now()
	_, err := s.Run(context.Background(), "a@1", request(9, 1, 2))
	if !errors.Is(err, sched.ErrOverloaded) {
		t.Fatalf("Run on a full queue: %v, want ErrOverloaded", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("ErrOverloaded took %v", d)
	}
	if st := s.Stats(); st.Rejected != 1 || st.QueueDepth != 2 {
		t.Errorf("stats %+v, want 1 rejected, 2 waiting", st)
	}
	for range 3 {
		f.gate <- struct{}{}
	}
	for _, r := range append(rest, first) {
		if res := recv(t, r); res.err != nil {
			t.Error(res.err)
		}
	}
	closeNow(t, s)
	if !slices.Equal(depths, []int{1, 0, 1, 2, 1, 0}) {
		t.Errorf("depths %v", depths)
	}
}

func TestCancelWaiting(t *testing.T) {
	defer noLeaks(t)()
	f, s := gated(t, true, sched.Options{})
	first := submit(context.Background(), s, "a@1", request(1, 1, 2))
	recv(t, f.started)
	ctx, cancel := context.WithCancel(context.Background())
	waiting := queue(t, s, ctx, "b@1", "a@1")
	cancel()
	for _, r := range waiting {
		if res := recv(t, r); !errors.Is(res.err, context.Canceled) {
			t.Errorf("canceled waiting request: %v", res.err)
		}
	}
	if st := s.Stats(); st.QueueDepth != 0 || st.Canceled != 2 {
		t.Errorf("stats %+v, want nothing waiting, 2 canceled", st)
	}
	// a deadline that passes while waiting
	dctx, dcancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer dcancel()
	if _, err := s.Run(dctx, "c@1", request(3, 1, 2)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("request past its deadline: %v", err)
	}
	// an ended context is refused before queueing
	if _, err := s.Run(ctx, "a@1", request(4, 1, 2)); !errors.Is(err, context.Canceled) {
		t.Errorf("Run with a canceled context: %v", err)
	}
	f.gate <- struct{}{}
	if res := recv(t, first); res.err != nil {
		t.Error(res.err)
	}
	closeNow(t, s)
	f.check(t)
	if len(f.order) != 1 {
		t.Errorf("Runs %v, want only the first", f.order)
	}
}

// TestCancelSwitchAbandoned: when every request waiting for a switch
// leaves, the switch's context is cancelled, and a request that comes
// later for the same key is not failed by that cancellation.
func TestCancelSwitchAbandoned(t *testing.T) {
	defer noLeaks(t)()
	entered, release := make(chan context.Context, 4), make(chan struct{})
	b := &switchBlocker{entered: entered, release: release}
	s := mustNew(t, b, sched.Options{Exclusive: true})
	ctx, cancel := context.WithCancel(context.Background())
	r1 := submit(ctx, s, "a@1", request(1, 1, 2))
	sctx := recv(t, entered)
	cancel()
	if res := recv(t, r1); !errors.Is(res.err, context.Canceled) {
		t.Errorf("request canceled during its switch: %v", res.err)
	}
	select {
	case <-sctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the abandoned switch's context was not cancelled")
	}
	r2 := submit(context.Background(), s, "a@1", request(2, 1, 2))
	waitFor(t, "second request queued", func() bool { return s.Stats().QueueDepth == 1 })
	close(release) // the first switch returns its ctx error; a second one succeeds
	sctx2 := recv(t, entered)
	_ = sctx2
	if res := recv(t, r2); res.err != nil {
		t.Errorf("request after an abandoned switch: %v", res.err)
	}
	closeNow(t, s)
	if st := s.Stats(); st.Switches != 2 || st.SwitchErrors != 1 || st.Completed != 1 || st.Canceled != 1 {
		t.Errorf("stats %+v", st)
	}
}

// switchBlocker's first Switch blocks until release is closed, then
// returns its context's error; Runs echo.
type switchBlocker struct {
	entered chan context.Context
	release chan struct{}
	n       atomic.Int32
}

func (b *switchBlocker) Switch(ctx context.Context, key sched.Key) error {
	b.entered <- ctx
	if b.n.Add(1) == 1 {
		<-b.release
		return ctx.Err()
	}
	return nil
}

func (b *switchBlocker) Run(ctx context.Context, key sched.Key, in map[string]*tensor.Tensor) (map[string]*tensor.Tensor, error) {
	return in, nil
}

func TestCancelRunningAlone(t *testing.T) {
	defer noLeaks(t)()
	f, s := gated(t, true, sched.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	r := submit(ctx, s, "a@1", request(1, 1, 2))
	info := recv(t, f.started)
	cancel()
	res := recv(t, r)
	if !errors.Is(res.err, context.Canceled) {
		t.Errorf("canceled running request: %v", res.err)
	}
	if info.ctx.Err() == nil {
		t.Error("the backend's context was not cancelled")
	}
	closeNow(t, s)
	if st := s.Stats(); st.Canceled != 1 || st.Completed != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestCancelRunningBatch(t *testing.T) {
	defer noLeaks(t)()
	f, s := gated(t, true, sched.Options{MaxBatch: 8})
	first := submit(context.Background(), s, "a@1", request(1, 1, 2))
	recv(t, f.started)
	ctx1, cancel1 := context.WithCancel(context.Background())
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	in2 := request(3, 2, 2)
	r1 := queue(t, s, ctx1, "a@1")[0]
	r2 := submit(ctx2, s, "a@1", in2)
	waitFor(t, "second member queued", func() bool { return s.Stats().QueueDepth == 2 })
	f.gate <- struct{}{}
	if res := recv(t, first); res.err != nil {
		t.Fatal(res.err)
	}
	info := recv(t, f.started)
	if info.rows != 3 {
		t.Fatalf("batch of %d rows, want 3", info.rows)
	}
	cancel1()
	if res := recv(t, r1); !errors.Is(res.err, context.Canceled) {
		t.Errorf("canceled batch member: %v", res.err)
	}
	if info.ctx.Err() != nil {
		t.Error("batch cancelled while a member still waits for it")
	}
	f.gate <- struct{}{}
	res := recv(t, r2)
	if res.err == nil {
		res.err = verify("a@1", in2, res.out)
	}
	if res.err != nil {
		t.Errorf("remaining batch member: %v", res.err)
	}

	// every member cancelled: the batch's Run is cancelled
	blocker := submit(context.Background(), s, "a@1", request(4, 1, 2))
	recv(t, f.started)
	ctx3, cancel3 := context.WithCancel(context.Background())
	rs := queue(t, s, ctx3, "a@1", "a@1")
	f.gate <- struct{}{}
	if res := recv(t, blocker); res.err != nil {
		t.Fatal(res.err)
	}
	info = recv(t, f.started)
	cancel3()
	for _, r := range rs {
		if res := recv(t, r); !errors.Is(res.err, context.Canceled) {
			t.Errorf("canceled member: %v", res.err)
		}
	}
	select {
	case <-info.ctx.Done():
	case <-time.After(10 * time.Second):
		t.Error("batch not cancelled after every member left")
	}
	closeNow(t, s)
	if st := s.Stats(); st.Canceled != 3 || st.Completed != 3 || st.Submitted != 6 {
		t.Errorf("stats %+v", st)
	}
}

func TestSwitchFails(t *testing.T) {
	defer noLeaks(t)()
	bad := errors.New("adapter file is corrupt")
	f := &fake{exclusive: true, gate: make(chan struct{}), started: make(chan runInfo, 100),
		failSwitch: map[sched.Key]error{"bad@1": bad}}
	var switched []string
	s := mustNew(t, f, sched.Options{Exclusive: true, MaxWait: time.Hour, Observer: sched.Observer{
		Switched: func(from, to sched.Key, d time.Duration, err error) {
			switched = append(switched, fmt.Sprintf("%s>%s:%v", from, to, err != nil))
		},
	}})
	first := submit(context.Background(), s, "a@1", request(1, 1, 2))
	recv(t, f.started)
	rs := queue(t, s, context.Background(), "bad@1", "c@1", "bad@1")
	f.gate <- struct{}{}
	if res := recv(t, first); res.err != nil {
		t.Fatal(res.err)
	}
	for _, r := range []<-chan result{rs[0], rs[2]} {
		res := recv(t, r)
		if !errors.Is(res.err, bad) || !strings.Contains(res.err.Error(), `"bad@1"`) {
			t.Errorf("request for a key that fails to switch: %v", res.err)
		}
	}
	recv(t, f.started)
	f.gate <- struct{}{}
	if res := recv(t, rs[1]); res.err != nil {
		t.Errorf("request of another key after a failed switch: %v", res.err)
	}
	// c is active and known again; a failed switch then a Run of the
	// previous key needs a new switch
	r := submit(context.Background(), s, "bad@1", request(5, 1, 2))
	if res := recv(t, r); !errors.Is(res.err, bad) {
		t.Errorf("bad key: %v", res.err)
	}
	if st := s.Stats(); st.ActiveKnown {
		t.Errorf("stats %+v: active key known after a failed switch", st)
	}
	r = submit(context.Background(), s, "c@1", request(6, 1, 2))
	recv(t, f.started)
	f.gate <- struct{}{}
	if res := recv(t, r); res.err != nil {
		t.Error(res.err)
	}
	closeNow(t, s)
	f.check(t)
	want := []string{">a@1:false", "a@1>bad@1:true", ">c@1:false", "c@1>bad@1:true", ">c@1:false"}
	if !slices.Equal(switched, want) {
		t.Errorf("switches %v, want %v", switched, want)
	}
	if st := s.Stats(); st.Failed != 3 || st.Completed != 3 || st.SwitchErrors != 2 || !st.ActiveKnown || st.Active != "c@1" {
		t.Errorf("stats %+v", st)
	}
}

func TestPanics(t *testing.T) {
	defer noLeaks(t)()
	f := &fake{exclusive: true, panicRun: map[sched.Key]bool{"boom@1": true}, panicSw: map[sched.Key]bool{"swboom@1": true}}
	s := mustNew(t, f, sched.Options{Exclusive: true, MaxBatch: 4, MaxConcurrent: 2})
	var pe *sched.PanicError
	if _, err := s.Run(context.Background(), "boom@1", request(1, 1, 2)); !errors.As(err, &pe) || pe.Op != "Run" || pe.Key != "boom@1" || len(pe.Stack) == 0 {
		t.Errorf("Run that panics: %v", err)
	}
	if _, err := s.Run(context.Background(), "swboom@1", request(2, 1, 2)); !errors.As(err, &pe) || pe.Op != "Switch" || pe.Value != "switch exploded" {
		t.Errorf("Switch that panics: %v", err)
	}
	// a batch that panics fails all its members
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if _, err := s.Run(context.Background(), "boom@1", request(i, 1, 2)); !errors.As(err, new(*sched.PanicError)) {
				t.Errorf("member of a panicking batch: %v", err)
			}
		})
	}
	wg.Wait()
	in := request(3, 2, 2)
	out, err := s.Run(context.Background(), "fine@1", in)
	if err == nil {
		err = verify("fine@1", in, out)
	}
	if err != nil {
		t.Errorf("after panics: %v", err)
	}
	closeNow(t, s)
	f.check(t)
}

// TestBadInput: nothing a caller passes makes the scheduler panic.
func TestBadInput(t *testing.T) {
	defer noLeaks(t)()
	f := &fake{exclusive: true}
	s := mustNew(t, f, sched.Options{Exclusive: true, MaxBatch: 4, MaxConcurrent: 2})
	if _, err := s.Run(context.Background(), "a@1,", request(1, 1, 2)); !errors.Is(err, sched.ErrBadKey) {
		t.Errorf("malformed key: %v", err)
	}
	in := request(2, 1, 2)
	out, err := s.Run(nil, "a@1.0", in) //nolint:staticcheck // a nil context is what is being tested
	if err == nil {
		err = verify("a@1", in, out) // canonicalized
	}
	if err != nil {
		t.Errorf("nil context, non-canonical key: %v", err)
	}
	if f.order[len(f.order)-1] != "a@1" {
		t.Errorf("backend saw %q, want the canonical key", f.order[len(f.order)-1])
	}
	x, _ := tensor.FromFloat32([]int64{2, 2}, []float32{1, 2, 3, 4})
	scalar, _ := tensor.FromInt64(nil, []int64{1})
	bad := []map[string]*tensor.Tensor{
		nil,
		{},
		{"x": nil},
		{"x": x, "id": nil},
		{"x": x, "id": scalar},
		{"x": &tensor.Tensor{DType: tensor.Float32, Shape: []int64{2, 2}, Data: []byte{1}}, "id": scalar},
		{"x": &tensor.Tensor{DType: tensor.String, Shape: []int64{1}}, "id": scalar},
		{"x": &tensor.Tensor{DType: tensor.Float32, Shape: []int64{-1, 2}}, "id": scalar},
		{"x": &tensor.Tensor{DType: tensor.Float32, Shape: []int64{0, 2}}, "id": &tensor.Tensor{DType: tensor.Int64, Shape: []int64{0}}},
		{"x": &tensor.Tensor{DType: tensor.Float32, Shape: []int64{1 << 62, 1 << 62}}, "id": scalar},
	}
	var wg sync.WaitGroup
	for range 3 { // concurrently, so some would share a batch
		for i, in := range bad {
			wg.Go(func() {
				defer func() {
					if p := recover(); p != nil {
						t.Errorf("input %d: panic %v", i, p)
					}
				}()
				s.Run(context.Background(), "a@1", in)
			})
		}
	}
	wg.Wait()
	closeNow(t, s)
	f.check(t)
	if st := s.Stats(); st.Submitted != st.Completed+st.Failed {
		t.Errorf("stats %+v", st)
	}
}

// TestBatchOutputRows: a batched Run whose output rows do not match fails
// every member instead of handing out someone else's rows.
func TestBatchOutputRows(t *testing.T) {
	defer noLeaks(t)()
	f, s := gated(t, true, sched.Options{MaxBatch: 8})
	f.wrongRows = true
	first := submit(context.Background(), s, "a@1", request(1, 1, 2))
	recv(t, f.started)
	rs := queue(t, s, context.Background(), "a@1", "a@1")
	f.gate <- struct{}{}
	recv(t, first) // alone: the backend's outputs are passed through
	recv(t, f.started)
	f.gate <- struct{}{}
	for _, r := range rs {
		if res := recv(t, r); res.err == nil || !strings.Contains(res.err.Error(), "want 2 rows") {
			t.Errorf("member of a batch with wrong output rows: %v", res.err)
		}
	}
	closeNow(t, s)
}

func TestClose(t *testing.T) {
	t.Run("drain", func(t *testing.T) {
		defer noLeaks(t)()
		f := &fake{exclusive: true, runDelay: time.Millisecond, switchDelay: time.Millisecond}
		s := mustNew(t, f, sched.Options{Exclusive: true})
		var rs []<-chan result
		var ins []map[string]*tensor.Tensor
		var keys []sched.Key
		for i := range 20 {
			keys = append(keys, sched.Key(fmt.Sprintf("k%d@1", i%3)))
			ins = append(ins, request(i, 1, 2))
			rs = append(rs, submit(context.Background(), s, keys[i], ins[i]))
		}
		waitFor(t, "requests queued", func() bool { return s.Stats().Submitted == 20 })
		closeNow(t, s)
		if st := s.Stats(); st.Completed != 20 || st.QueueDepth != 0 || st.InFlight != 0 {
			t.Errorf("after Close: %+v", st)
		}
		for i, r := range rs {
			res := recv(t, r)
			if res.err == nil {
				res.err = verify(keys[i], ins[i], res.out)
			}
			if res.err != nil {
				t.Error(res.err)
			}
		}
		if _, err := s.Run(context.Background(), "a@1", request(1, 1, 2)); !errors.Is(err, sched.ErrClosed) {
			t.Errorf("Run after Close: %v", err)
		}
		if err := s.Close(context.Background()); err != nil {
			t.Errorf("second Close: %v", err)
		}
		f.check(t)
	})
	t.Run("deadline", func(t *testing.T) {
		defer noLeaks(t)()
		f, s := gated(t, true, sched.Options{})
		first := submit(context.Background(), s, "a@1", request(1, 1, 2))
		info := recv(t, f.started)
		rs := queue(t, s, context.Background(), "b@1", "a@1")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		if err := s.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Close past its deadline: %v", err)
		}
		for _, r := range rs {
			if res := recv(t, r); !errors.Is(res.err, sched.ErrClosed) {
				t.Errorf("waiting request at a forced Close: %v", res.err)
			}
		}
		if res := recv(t, first); !errors.Is(res.err, sched.ErrClosed) || !errors.Is(res.err, context.Canceled) {
			t.Errorf("running request at a forced Close: %v", res.err)
		}
		if info.ctx.Err() == nil {
			t.Error("running request's backend context not cancelled")
		}
		closeNow(t, s) // drained now
		if st := s.Stats(); st.Canceled != 2 || st.Failed != 1 {
			t.Errorf("stats %+v", st)
		}
	})
}

// TestSharedOverlap: a non-exclusive backend runs different keys at once
// and is never switched.
func TestSharedOverlap(t *testing.T) {
	defer noLeaks(t)()
	f, s := gated(t, false, sched.Options{MaxConcurrent: 2})
	r1 := submit(context.Background(), s, "a@1", request(1, 1, 2))
	r2 := submit(context.Background(), s, "b@1", request(2, 1, 2))
	recv(t, f.started)
	recv(t, f.started)
	f.gate <- struct{}{}
	f.gate <- struct{}{}
	recv(t, r1)
	recv(t, r2)
	closeNow(t, s)
	f.check(t)
	if !f.overlapped || len(f.switches) != 0 {
		t.Errorf("overlapped %v, switches %v", f.overlapped, f.switches)
	}
}

// TestExclusiveConcurrent: Runs of the active key overlap up to
// MaxConcurrent, and a switch waits for all of them.
func TestExclusiveConcurrent(t *testing.T) {
	defer noLeaks(t)()
	f, s := gated(t, true, sched.Options{MaxConcurrent: 3})
	rs := []<-chan result{submit(context.Background(), s, "a@1", request(1, 1, 2))}
	recv(t, f.started)
	rs = append(rs, submit(context.Background(), s, "a@1", request(2, 1, 2)), submit(context.Background(), s, "a@1", request(3, 1, 2)))
	recv(t, f.started)
	recv(t, f.started)
	rs = append(rs, queue(t, s, context.Background(), "b@1")...)
	for range 4 {
		f.gate <- struct{}{}
	}
	for _, r := range rs {
		if res := recv(t, r); res.err != nil {
			t.Error(res.err)
		}
	}
	closeNow(t, s)
	f.check(t)
	if f.maxRunning != 3 {
		t.Errorf("%d Runs in flight at most, want 3", f.maxRunning)
	}
}

// TestStreamGroupsGenerations: clients that each run sequences of 8 steps
// on one key (a text generation: each step queued when the previous one
// returned) switch once per step as plain requests, and far less as a
// Stream; a streamed key gives way to another key's request after MaxWait
// at most, and closing the stream lets the scheduler switch at once.
func TestStreamGroupsGenerations(t *testing.T) {
	defer noLeaks(t)()
	run := func(stream bool) (switches, runs int64) {
		f := &fake{exclusive: true, runDelay: 200 * time.Microsecond, switchDelay: 200 * time.Microsecond}
		s := mustNew(t, f, sched.Options{Exclusive: true, MaxWait: 20 * time.Millisecond})
		var wg sync.WaitGroup
		for cl := range 6 {
			wg.Go(func() {
				for seq := range 8 {
					k := sched.Key(fmt.Sprintf("k%d@1", (cl+seq)%6))
					var st *sched.Stream
					if stream {
						st = s.Stream(k)
					}
					for step := range 8 {
						in := request(cl*1000+seq*10+step, 1, 2)
						var out map[string]*tensor.Tensor
						var err error
						if stream {
							out, err = st.Run(context.Background(), in)
						} else {
							out, err = s.Run(context.Background(), k, in)
						}
						if err == nil {
							err = verify(k, in, out)
						}
						if err != nil {
							t.Error(err)
						}
					}
					if st != nil {
						st.Close()
					}
				}
			})
		}
		wg.Wait()
		closeNow(t, s)
		f.check(t)
		st := s.Stats()
		return st.Switches, st.Runs
	}
	sw0, runs0 := run(false)
	sw1, runs1 := run(true)
	t.Logf("plain requests: %d switches for %d Runs; streams: %d for %d", sw0, runs0, sw1, runs1)
	if sw1*2 > sw0 {
		t.Errorf("streams did not group the steps: %d switches with them, %d without", sw1, sw0)
	}

	// A stream open forever still gives way after MaxWait.
	f := &fake{exclusive: true}
	const maxWait = 30 * time.Millisecond
	s := mustNew(t, f, sched.Options{Exclusive: true, MaxWait: maxWait})
	st := s.Stream("a@1")
	if _, err := st.Run(context.Background(), request(1, 1, 2)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := s.Run(context.Background(), "b@1", request(2, 1, 2)); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < maxWait*9/10 || waited > maxWait+500*time.Millisecond {
		t.Errorf("the other key waited %v behind a streamed key, want about MaxWait %v", waited, maxWait)
	}
	// Closed: the next switch is at once.
	st.Close()
	if _, err := st.Run(context.Background(), request(3, 1, 2)); err == nil {
		t.Error("Run on a closed stream succeeded")
	}
	if _, err := s.Run(context.Background(), "a@1", request(3, 1, 2)); err != nil {
		t.Fatal(err)
	}
	st2 := s.Stream("a@1")
	st2.Close()
	start = time.Now()
	if _, err := s.Run(context.Background(), "b@1", request(4, 1, 2)); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited > maxWait/2+100*time.Millisecond {
		t.Errorf("a closed stream still delayed the switch: %v", waited)
	}
	st.Close() // a second call is a no-op
	if _, err := s.Stream("a@nan").Run(context.Background(), request(5, 1, 2)); !errors.Is(err, sched.ErrBadKey) {
		t.Errorf("a stream of a malformed key: %v, want ErrBadKey", err)
	}
	closeNow(t, s)
	f.check(t)
}

// generate runs steps requests on st, the request of step i one row of
// width w0+i (a text generation's growing sequence), sleeping pause before
// each step after the first.
func generate(t *testing.T, st *sched.Stream, key sched.Key, id, w0, steps int, pause time.Duration) {
	t.Helper()
	for i := range steps {
		if i > 0 && pause > 0 {
			time.Sleep(pause)
		}
		in := request(id*100+i, 1, w0+i)
		out, err := st.Run(context.Background(), in)
		if err == nil {
			err = verify(key, in, out)
		}
		if err != nil {
			t.Error(err)
			return
		}
	}
}

// occupy runs a plain request of key (one row, width 50) and returns once
// it is in flight (held by a fake's gate), with the channel its error
// arrives on.
func occupy(s *sched.Scheduler, key sched.Key) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := s.Run(context.Background(), key, request(99, 1, 50))
		done <- err
	}()
	for s.Stats().InFlight == 0 {
		time.Sleep(100 * time.Microsecond)
	}
	return done
}

// TestStreamCohorts: streams of the active key opened while another stream
// of it runs wait for that stream's cohort to end and then start together,
// their steps batched (same step, same shape) instead of one by one; a
// stream outside the cohort still waits no more than about MaxWait.
func TestStreamCohorts(t *testing.T) {
	defer noLeaks(t)()
	const key = sched.Key("a@1")
	f := &fake{exclusive: true, runDelay: 2 * time.Millisecond}
	s := mustNew(t, f, sched.Options{Exclusive: true, MaxWait: 5 * time.Second, MaxBatch: 8})
	first := s.Stream(key)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer first.Close()
		generate(t, first, key, 1, 100, 10, 0)
	})
	time.Sleep(5 * time.Millisecond) // the first stream is running
	for i := range 3 {
		wg.Go(func() {
			time.Sleep(time.Duration(i) * time.Millisecond) // opened one by one
			st := s.Stream(key)
			defer st.Close()
			generate(t, st, key, 2+i, 2, 5, 0)
		})
	}
	wg.Wait()
	closeNow(t, s)
	f.check(t)
	late := f.runsNarrowerThan(100)
	if len(late) != 5 {
		t.Fatalf("the three later streams ran their 5 steps in %d Runs %v, want 5 Runs of 3 rows", len(late), late)
	}
	for _, r := range late {
		if r.rows != 3 {
			t.Errorf("a Run of the later streams had %d rows, want 3: %v", r.rows, late)
		}
	}

	// Bounded: a stream outside the cohort waits about MaxWait, not for the
	// cohort's end.
	const maxWait = 20 * time.Millisecond
	f = &fake{exclusive: true, runDelay: time.Millisecond}
	s = mustNew(t, f, sched.Options{Exclusive: true, MaxWait: maxWait, MaxBatch: 8})
	long := s.Stream(key)
	wg.Go(func() {
		defer long.Close()
		generate(t, long, key, 1, 100, 150, 0) // 150 ms or more
	})
	time.Sleep(5 * time.Millisecond)
	late2 := s.Stream(key)
	start := time.Now()
	if _, err := late2.Run(context.Background(), request(7, 1, 2)); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited > maxWait+50*time.Millisecond {
		t.Errorf("a stream outside the cohort waited %v, want about MaxWait %v", waited, maxWait)
	}
	late2.Close()
	wg.Wait()
	closeNow(t, s)
	f.check(t)
}

// TestStreamPartners: streams whose steps ran as one batch keep running
// together when one of them queues its next step a little later than the
// others (sampling, writing the response): the scheduler, idle otherwise,
// waits for it instead of running the others without it.
func TestStreamPartners(t *testing.T) {
	defer noLeaks(t)()
	const key = sched.Key("a@1")
	defer sched.SetPartnerWait(100 * time.Millisecond)() // slow machines: the pauses below may take a few ms
	for _, exclusive := range []bool{true, false} {
		f := &fake{exclusive: exclusive, gate: make(chan struct{})}
		s := mustNew(t, f, sched.Options{Exclusive: exclusive, MaxBatch: 8})
		// A plain request holds the backend while the streams queue their
		// first step.
		done := occupy(s, key)
		var wg sync.WaitGroup
		for i := range 3 {
			st := s.Stream(key)
			wg.Go(func() {
				defer st.Close()
				generate(t, st, key, 1+i, 2, 6, time.Duration(i)*200*time.Microsecond)
			})
		}
		for s.Stats().QueueDepth < 3 {
			time.Sleep(100 * time.Microsecond)
		}
		close(f.gate) // every Run passes from now on
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		closeNow(t, s)
		f.check(t)
		steps := f.runsNarrowerThan(50)
		if len(steps) != 6 {
			t.Errorf("exclusive %v: 3 streams of 6 steps ran in %d Runs %v, want 6 Runs of 3 rows", exclusive, len(steps), steps)
		}
	}
}

// TestStreamPartnersDoNotBlockOthers: in a shared scheduler, while the
// oldest request waits for the streams at its step, requests of other
// keys run.
func TestStreamPartnersDoNotBlockOthers(t *testing.T) {
	defer noLeaks(t)()
	defer sched.SetPartnerWait(time.Second)()
	f := &fake{gate: make(chan struct{})}
	s := mustNew(t, f, sched.Options{MaxBatch: 8})
	// Two streams run their first step as one batch (a plain request holds
	// the backend while they queue it).
	done := occupy(s, "a@1")
	x, y := s.Stream("a@1"), s.Stream("a@1")
	defer x.Close()
	defer y.Close()
	first := make(chan error, 2)
	for i, st := range []*sched.Stream{x, y} {
		go func() {
			_, err := st.Run(context.Background(), request(i, 1, 2))
			first <- err
		}()
	}
	for s.Stats().QueueDepth < 2 {
		time.Sleep(100 * time.Microsecond)
	}
	close(f.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-first; err != nil {
			t.Fatal(err)
		}
	}
	// x queues its second step; y does not (yet): x waits for y, and a
	// request of another key runs meanwhile.
	xs := make(chan error, 1)
	go func() {
		_, err := x.Run(context.Background(), request(10, 1, 3))
		xs <- err
	}()
	for s.Stats().QueueDepth < 1 {
		time.Sleep(100 * time.Microsecond)
	}
	start := time.Now()
	if _, err := s.Run(context.Background(), "b@1", request(20, 1, 3)); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("another key's request waited %v behind a stream waiting for its partner", d)
	}
	if len(xs) != 0 {
		t.Error("x's step ran without waiting for y")
	}
	if _, err := y.Run(context.Background(), request(11, 1, 3)); err != nil {
		t.Fatal(err)
	}
	if err := <-xs; err != nil {
		t.Fatal(err)
	}
	closeNow(t, s)
	f.check(t)
}

// TestStreamOutsideCohortCancelAndClose: a stream's request waiting outside
// its key's cohort leaves at once when its context ends, and runs at once
// when its stream is closed concurrently (no cohort will take it); the
// cohort's stream closing then lets the next streams start.
func TestStreamOutsideCohortCancelAndClose(t *testing.T) {
	defer noLeaks(t)()
	const key = sched.Key("a@1")
	f := &fake{exclusive: true}
	s := mustNew(t, f, sched.Options{Exclusive: true, MaxWait: time.Hour, MaxBatch: 8})
	member := s.Stream(key)
	if _, err := member.Run(context.Background(), request(1, 1, 2)); err != nil {
		t.Fatal(err)
	}
	// The member is between steps: a new stream of the key waits.
	late := s.Stream(key)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := late.Run(ctx, request(2, 1, 2))
		errc <- err
	}()
	for s.Stats().QueueDepth == 0 {
		time.Sleep(100 * time.Microsecond)
	}
	select {
	case err := <-errc:
		t.Fatalf("a stream outside the cohort ran while the cohort was open: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled while waiting outside the cohort: %v", err)
	}
	// Waiting again, then closed by another goroutine: it runs.
	go func() {
		_, err := late.Run(context.Background(), request(3, 1, 2))
		errc <- err
	}()
	for s.Stats().QueueDepth == 0 {
		time.Sleep(100 * time.Microsecond)
	}
	late.Close()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the request of a stream closed while it waited outside the cohort never ran")
	}
	// The member closes: a stream opened now starts at once.
	member.Close()
	next := s.Stream(key)
	start := time.Now()
	if _, err := next.Run(context.Background(), request(4, 1, 2)); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("a stream opened after the cohort closed waited %v", d)
	}
	next.Close()
	if st := s.Stats(); st.QueueDepth != 0 || st.Canceled != 1 || st.Completed != 3 {
		t.Errorf("stats %+v: want 3 completed, 1 canceled, none waiting", st)
	}
	closeNow(t, s)
	f.check(t)
}
