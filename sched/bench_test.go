package sched_test

import (
	"context"
	"testing"

	"github.com/shira-ort/shira-ort/sched"
	"github.com/shira-ort/shira-ort/tensor"
)

// nop is a Backend that does nothing: the benchmarks measure the
// scheduler's own cost per request.
type nop struct{}

func (nop) Switch(context.Context, sched.Key) error { return nil }
func (nop) Run(_ context.Context, _ sched.Key, in map[string]*tensor.Tensor) (map[string]*tensor.Tensor, error) {
	return in, nil
}

// BenchmarkRun is the scheduler's overhead per request over a no-op
// backend: one caller (queue, dispatch, a goroutine per Run, answer), and
// many callers on a few keys, with batching (concatenation and split).
func BenchmarkRun(b *testing.B) {
	in := request(1, 1, 16)
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		s := mustNew(b, nop{}, sched.Options{Exclusive: true})
		defer s.Close(context.Background())
		for b.Loop() {
			if _, err := s.Run(context.Background(), "a@1", in); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, c := range []struct {
		name  string
		batch int
	}{{"parallel", 1}, {"parallel/batch16", 16}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			s := mustNew(b, nop{}, sched.Options{Exclusive: true, MaxBatch: c.batch, MaxConcurrent: 2})
			defer s.Close(context.Background())
			keys := []sched.Key{"a@1", "b@1", "c@1"}
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					i++
					if _, err := s.Run(context.Background(), keys[i/64%3], in); err != nil {
						b.Error(err)
						return
					}
				}
			})
			st := s.Stats()
			b.ReportMetric(float64(st.Switches)/float64(st.Submitted)*1000, "switches/1k")
			b.ReportMetric(float64(st.Submitted)/float64(st.Runs), "req/run")
		})
	}
}
