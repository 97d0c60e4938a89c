package sched_test

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/sched"
	"github.com/shira-ort/shira-ort/tensor"
)

// fake is a Backend that checks the scheduler's promises and computes
// outputs that identify the key and the rows they were computed from:
//
//	inputs  x float32 [rows, w], id int64 [rows]
//	outputs y float32 [rows, w] = x * factor(key), k int64 [rows, 2] = (id, hash(key))
type fake struct {
	exclusive   bool
	runDelay    time.Duration
	switchDelay time.Duration
	// gate, when set, holds every Run until it receives a token (or the
	// Run's ctx ends, and then the Run returns ctx.Err()).
	gate chan struct{}
	// started, when set, receives each Run's key, rows and ctx as it starts.
	started    chan runInfo
	failSwitch map[sched.Key]error
	panicRun   map[sched.Key]bool
	panicSw    map[sched.Key]bool
	wrongRows  bool // outputs carry one row too many

	mu         sync.Mutex
	active     sched.Key
	known      bool
	switching  bool
	running    int
	runKeys    map[sched.Key]int
	maxRunning int
	overlapped bool // Runs of different keys were in flight together
	violations []string
	order      []sched.Key // keys of Runs, in order
	shapes     []runShape  // key, rows and width of Runs, in order
	switches   []sched.Key
	maxRun     time.Duration
	maxSwitch  time.Duration
	runTimes   []time.Duration
	swTimes    []time.Duration
}

type runShape struct {
	key     sched.Key
	rows, w int
}

type runInfo struct {
	key  sched.Key
	rows int
	ctx  context.Context
}

func (f *fake) violate(format string, args ...any) {
	f.violations = append(f.violations, fmt.Sprintf(format, args...))
}

func (f *fake) Switch(ctx context.Context, key sched.Key) error {
	start := time.Now()
	f.mu.Lock()
	if !f.exclusive {
		f.violate("Switch(%q) on a non-exclusive backend", key)
	}
	if f.running > 0 {
		f.violate("Switch(%q) with %d Runs in flight", key, f.running)
	}
	if f.switching {
		f.violate("Switch(%q) during another Switch", key)
	}
	f.switching = true
	f.known = false
	f.switches = append(f.switches, key)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.switching = false
		d := time.Since(start)
		f.maxSwitch = max(f.maxSwitch, d)
		f.swTimes = append(f.swTimes, d)
		f.mu.Unlock()
	}()
	if f.switchDelay > 0 {
		time.Sleep(f.switchDelay)
	}
	if f.panicSw[key] {
		panic("switch exploded")
	}
	if err := f.failSwitch[key]; err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	f.active, f.known = key, true
	f.mu.Unlock()
	return nil
}

func (f *fake) Run(ctx context.Context, key sched.Key, inputs map[string]*tensor.Tensor) (map[string]*tensor.Tensor, error) {
	start := time.Now()
	x, id := inputs["x"], inputs["id"]
	if x == nil || id == nil || len(x.Shape) != 2 || len(id.Shape) != 1 || x.Shape[0] != id.Shape[0] {
		return nil, errors.New("fake: want x [rows, w] and id [rows]")
	}
	rows := int(x.Shape[0])
	f.mu.Lock()
	if f.switching {
		f.violate("Run(%q) during a Switch", key)
	}
	if f.exclusive && (!f.known || f.active != key) {
		f.violate("Run(%q) while %q is active (known %v)", key, f.active, f.known)
	}
	if f.runKeys == nil {
		f.runKeys = make(map[sched.Key]int)
	}
	f.runKeys[key]++
	if len(f.runKeys) > 1 {
		f.overlapped = true
	}
	f.running++
	f.maxRunning = max(f.maxRunning, f.running)
	f.order = append(f.order, key)
	f.shapes = append(f.shapes, runShape{key, rows, int(x.Shape[1])})
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.running--
		if f.runKeys[key]--; f.runKeys[key] == 0 {
			delete(f.runKeys, key)
		}
		d := time.Since(start)
		f.maxRun = max(f.maxRun, d)
		f.runTimes = append(f.runTimes, d)
		f.mu.Unlock()
	}()
	if f.started != nil {
		f.started <- runInfo{key, rows, ctx}
	}
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.runDelay > 0 {
		time.Sleep(f.runDelay)
	}
	if f.panicRun[key] {
		panic("run exploded")
	}
	xs, err := x.AsFloat32()
	if err != nil {
		return nil, err
	}
	fk := factor(key)
	for i := range xs {
		xs[i] *= fk
	}
	out := rows
	if f.wrongRows {
		out++
		xs = append(xs, make([]float32, x.Shape[1])...)
	}
	y, err := tensor.FromFloat32([]int64{int64(out), x.Shape[1]}, xs)
	if err != nil {
		return nil, err
	}
	ids := tensor.Int64s(id.Data)
	kv := make([]int64, 0, 2*out)
	for i := range out {
		v := int64(-1)
		if i < len(ids) {
			v = ids[i]
		}
		kv = append(kv, v, keyHash(key))
	}
	k, err := tensor.FromInt64([]int64{int64(out), 2}, kv)
	if err != nil {
		return nil, err
	}
	return map[string]*tensor.Tensor{"y": y, "k": k}, nil
}

// runsNarrowerThan returns the Runs whose inputs were narrower than w, in
// order.
func (f *fake) runsNarrowerThan(w int) []runShape {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []runShape
	for _, r := range f.shapes {
		if r.w < w {
			out = append(out, r)
		}
	}
	return out
}

func (f *fake) check(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range f.violations {
		t.Error(v)
	}
}

// median returns the median of ds (0 for none).
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return ds[len(ds)/2]
}

func keyHash(k sched.Key) int64 {
	h := fnv.New64a()
	h.Write([]byte(k))
	return int64(h.Sum64() >> 1)
}

// factor is a small integer per key, so x*factor is exact in float32.
func factor(k sched.Key) float32 { return float32(2 + keyHash(k)%13) }

// request builds the inputs of request id: rows rows of width w whose
// values encode id, row and column.
func request(id, rows, w int) map[string]*tensor.Tensor {
	xs := make([]float32, rows*w)
	for i := range xs {
		xs[i] = float32((id%10000)*64 + i%64)
	}
	ids := make([]int64, rows)
	for i := range ids {
		ids[i] = int64(id)*1000 + int64(i)
	}
	x, _ := tensor.FromFloat32([]int64{int64(rows), int64(w)}, xs)
	idt, _ := tensor.FromInt64([]int64{int64(rows)}, ids)
	return map[string]*tensor.Tensor{"x": x, "id": idt}
}

// verify checks that out is exactly what fake computes for in under key.
func verify(key sched.Key, in, out map[string]*tensor.Tensor) error {
	x, id := in["x"], in["id"]
	y, k := out["y"], out["k"]
	if len(out) != 2 || y == nil || k == nil {
		return fmt.Errorf("outputs %v, want y and k", slices.Collect(mapKeys(out)))
	}
	if !slices.Equal(y.Shape, x.Shape) || y.DType != tensor.Float32 {
		return fmt.Errorf("y is %v %v, want float32 %v", y.DType, y.Shape, x.Shape)
	}
	if !slices.Equal(k.Shape, []int64{x.Shape[0], 2}) {
		return fmt.Errorf("k has shape %v, want [%d 2]", k.Shape, x.Shape[0])
	}
	xs, ys := tensor.Float32s(x.Data), tensor.Float32s(y.Data)
	for i := range xs {
		if ys[i] != xs[i]*factor(key) {
			return fmt.Errorf("y[%d] = %v, want %v (x %v times %v for %q)", i, ys[i], xs[i]*factor(key), xs[i], factor(key), key)
		}
	}
	ids, ks := tensor.Int64s(id.Data), tensor.Int64s(k.Data)
	for i := range ids {
		if ks[2*i] != ids[i] || ks[2*i+1] != keyHash(key) {
			return fmt.Errorf("row %d computed for id %d, key hash %d; want id %d under %q", i, ks[2*i], ks[2*i+1], ids[i], key)
		}
	}
	return nil
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// noLeaks fails t if the goroutine count does not come back to what it
// was when noLeaks was called (it retries: goroutines take a moment to
// exit after their last send).
func noLeaks(t *testing.T) func() {
	t.Helper()
	before := runtime.NumGoroutine()
	return func() {
		t.Helper()
		var now int
		for range 200 {
			if now = runtime.NumGoroutine(); now <= before {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before, %d after:\n%s", before, now, buf[:runtime.Stack(buf, true)])
	}
}

// closeNow drains s, failing t if that takes more than a few seconds.
func closeNow(t *testing.T, s *sched.Scheduler) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// waitFor polls cond until it holds or a few seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func recv[T any](t *testing.T, c <-chan T) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting on a channel")
		panic("unreachable")
	}
}
