package lorabranch

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/tensor"
)

// BenchmarkPerRunLoRA measures what ORT's per-run LoRA costs on the charlm
// text generator (tokens [batch, 64], one and two intra-op threads): every
// iteration Runs the original model with no adapter ("base"), the branch
// model with the bofh PEFT LoRA adapter active through RunLoRA ("lora",
// r=1 on all 13 linear weights) and the branch model with no adapter
// ("branch0": the zero branch still runs), in an order that rotates per
// iteration so drift and cache effects fall on all three alike. It reports
// the mean µs per Run of each, the lora/base and branch0/base ratios of the
// means, and the medians of the per-iteration ratios (steadier on a shared
// machine).
//
//	go test -run '^$' -bench PerRunLoRA -benchtime 200x ./internal/lorabranch/
func BenchmarkPerRunLoRA(b *testing.B) {
	orttest.Require(b)
	path := modelsPath("charlm", "model.onnx")
	orig := readFile(b, path)
	m := expose(b, path)
	ps, err := FromPeft(modelsPath("charlm", "lora", "bofh"), m)
	if err != nil {
		b.Fatal(err)
	}
	bm, err := AddBranches(orig, Targets(ps))
	if err != nil {
		b.Fatal(err)
	}
	a := loadAdapter(b, ps)
	ctx := context.Background()
	for _, threads := range []int{1, 2} {
		opts := &ort.Options{IntraOpThreads: threads}
		base := openData(b, orig, opts)
		branch := openData(b, bm, opts)
		for _, batch := range []int{1, 16} {
			b.Run(fmt.Sprintf("threads=%d/batch=%d", threads, batch), func(b *testing.B) {
				benchInterleaved(b, charlmInput(b, batch, 64), [3]runFunc{
					func(in feeds) (feeds, error) { return base.Run(ctx, in) },
					func(in feeds) (feeds, error) { return branch.RunLoRA(ctx, in, a) },
					func(in feeds) (feeds, error) { return branch.Run(ctx, in) },
				})
			})
		}
	}
}

// feeds are a Run's inputs or outputs by name.
type feeds = map[string]*tensor.Tensor

// runFunc is one kind of Run.
type runFunc func(feeds) (feeds, error)

// benchInterleaved runs base, lora and branch0 (runs[0], [1], [2]) on in
// once per iteration each, rotating their order, and reports the metrics
// BenchmarkPerRunLoRA describes.
func benchInterleaved(b *testing.B, in feeds, runs [3]runFunc) {
	for range 3 { // warm up
		for _, r := range runs {
			if _, err := r(in); err != nil {
				b.Fatal(err)
			}
		}
	}
	var times [3][]time.Duration
	i := 0
	for b.Loop() {
		for j := range 3 {
			k := (i + j) % 3
			t0 := time.Now()
			if _, err := runs[k](in); err != nil {
				b.Fatal(err)
			}
			times[k] = append(times[k], time.Since(t0))
		}
		i++
	}
	var mean [3]float64
	for k, ts := range times {
		var sum time.Duration
		for _, d := range ts {
			sum += d
		}
		mean[k] = float64(sum.Microseconds()) / float64(len(ts))
	}
	b.ReportMetric(mean[0], "base-µs/run")
	b.ReportMetric(mean[1], "lora-µs/run")
	b.ReportMetric(mean[2], "branch0-µs/run")
	b.ReportMetric(mean[1]/mean[0], "lora/base")
	b.ReportMetric(mean[2]/mean[0], "branch0/base")
	b.ReportMetric(pairedMedian(times[1], times[0]), "median-lora/base")
	b.ReportMetric(pairedMedian(times[2], times[0]), "median-branch0/base")
}

// pairedMedian returns the median over iterations i of x[i]/y[i]: Runs of
// one iteration are adjacent in time, so a slow period (other processes on
// the cores) weighs on both sides of each ratio.
func pairedMedian(x, y []time.Duration) float64 {
	r := make([]float64, len(x))
	for i := range x {
		r[i] = float64(x[i]) / float64(y[i])
	}
	slices.Sort(r)
	return r[len(r)/2]
}
