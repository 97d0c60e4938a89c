package sched

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/tensor"
)

// sleeper is a Backend that takes a little time and echoes its inputs.
type sleeper struct{ run, sw time.Duration }

func (b sleeper) Switch(ctx context.Context, key Key) error {
	time.Sleep(b.sw)
	return nil
}

func (b sleeper) Run(ctx context.Context, key Key, in map[string]*tensor.Tensor) (map[string]*tensor.Tensor, error) {
	time.Sleep(b.run)
	return in, nil
}

// TestReorderBound checks the policy's invariant exactly, at every
// dispatch under random load with cancellations: no request is dispatched
// while one that arrived MaxWait or more before it still waits; an
// exclusive backend only runs its active key; the queue's bookkeeping
// (groups, heap, counts) is consistent.
func TestReorderBound(t *testing.T) {
	for _, c := range []struct {
		exclusive  bool
		batch      int
		concurrent int
	}{{true, 1, 1}, {true, 4, 2}, {false, 4, 2}, {false, 1, 1}} {
		t.Run(fmt.Sprintf("exclusive=%v/batch=%d/concurrent=%d", c.exclusive, c.batch, c.concurrent), func(t *testing.T) {
			const maxWait = 3 * time.Millisecond
			var violations []string
			var dispatches, reordered int
			testHookDispatch = func(s *Scheduler, reqs []*request) {
				dispatches++
				if len(violations) > 5 {
					return
				}
				if s.o.Exclusive && (!s.known || s.active != reqs[0].key || s.switching) {
					violations = append(violations, fmt.Sprintf("dispatch of %q with %q active (known %v, switching %v)", reqs[0].key, s.active, s.known, s.switching))
				}
				n := 0
				for i, g := range s.heap {
					if g.idx != i || g.head == nil || s.groups[g.key] != g {
						violations = append(violations, fmt.Sprintf("heap entry %d: group %q idx %d", i, g.key, g.idx))
					}
					if i > 0 && s.heap[(i-1)/2].head.seq > g.head.seq {
						violations = append(violations, fmt.Sprintf("heap order broken at %d", i))
					}
					m := 0
					for r := g.head; r != nil; r = r.next {
						if r.g != g || r.state != stWaiting || (r.next != nil && r.next.seq < r.seq) {
							violations = append(violations, fmt.Sprintf("group %q out of order", g.key))
						}
						m++
					}
					if m != g.n {
						violations = append(violations, fmt.Sprintf("group %q holds %d, counts %d", g.key, m, g.n))
					}
					n += m
				}
				if n != s.waiting || len(s.heap) != len(s.groups) {
					violations = append(violations, fmt.Sprintf("%d waiting in %d groups (%d in heap), counted %d", n, len(s.groups), len(s.heap), s.waiting))
				}
				if len(s.heap) == 0 {
					return
				}
				oldest := s.heap[0].head
				for _, q := range reqs {
					if !q.enq.Before(oldest.enq.Add(s.o.MaxWait)) {
						violations = append(violations, fmt.Sprintf("request %d (%q) dispatched %v after request %d (%q), which still waits",
							q.seq, q.key, q.enq.Sub(oldest.enq), oldest.seq, oldest.key))
					}
					if q.seq > oldest.seq {
						reordered++
					}
				}
			}
			defer func() { testHookDispatch = nil }()
			s, err := New(sleeper{run: 100 * time.Microsecond, sw: 200 * time.Microsecond}, Options{
				Exclusive: c.exclusive, MaxWait: maxWait, MaxBatch: c.batch, MaxConcurrent: c.concurrent, QueueLimit: 24,
			})
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for cl := range 16 {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(cl), 3))
					zipf := rand.NewZipf(rng, 1.1, 1, 29)
					for range 40 {
						ctx, cancel := context.WithCancel(context.Background())
						if rng.IntN(10) == 0 {
							ctx, cancel = context.WithTimeout(context.Background(), time.Duration(rng.IntN(2000))*time.Microsecond)
						}
						x, _ := tensor.FromFloat32([]int64{int64(1 + rng.IntN(2)), 2}, make([]float32, 4))
						key := Key(fmt.Sprintf("k%d@1", zipf.Uint64()))
						s.Run(ctx, key, map[string]*tensor.Tensor{"x": x})
						cancel()
					}
				})
			}
			wg.Wait()
			if err := s.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			for _, v := range violations {
				t.Error(v)
			}
			st := s.Stats()
			if st.Submitted != st.Completed+st.Failed+st.Canceled || st.Failed != 0 {
				t.Errorf("stats %+v", st)
			}
			t.Logf("%d dispatches, %d requests reordered, stats %+v", dispatches, reordered, st)
		})
	}
}
