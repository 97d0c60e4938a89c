package ort

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// BenchmarkRun compares Run latency for a stack of 4 MatMuls with 1024x1024
// fp32 weights: live sessions whose exposed weights are bound with
// AddInitializer or fed each Run (neither is prepacked), a live session Run
// with a cancellable context (its own run options per Run), a baked
// session, a packed session, and a plain session of the same graph with constant weights
// (OpenModel). SHIRA_BENCH_THREADS sets the intra-op threads (default 1).
//
//	go test -run '^$' -bench Run -benchtime 200x ./ort/
func BenchmarkRun(b *testing.B) {
	requireORT(b)
	plain, exposed := benchModel(b, 1024, 4)
	threads := 1
	if v, err := strconv.Atoi(os.Getenv("SHIRA_BENCH_THREADS")); err == nil {
		threads = v
	}
	cancellable, cancel := context.WithCancel(context.Background())
	defer cancel()
	variants := []struct {
		name string
		ctx  context.Context
		open func() (*Session, error)
	}{
		{"live-add-initializer", context.Background(), func() (*Session, error) {
			return Open(context.Background(), exposed, &Options{IntraOpThreads: threads, Mode: ModeLive, WeightBinding: AddInitializer})
		}},
		{"live-feed-each-run", context.Background(), func() (*Session, error) {
			return Open(context.Background(), exposed, &Options{IntraOpThreads: threads, Mode: ModeLive, WeightBinding: FeedEachRun})
		}},
		{"live-cancellable-ctx", cancellable, func() (*Session, error) {
			return Open(context.Background(), exposed, &Options{IntraOpThreads: threads, Mode: ModeLive})
		}},
		{"baked", context.Background(), func() (*Session, error) {
			return Open(context.Background(), exposed, &Options{IntraOpThreads: threads, Mode: ModeBaked})
		}},
		{"packed", context.Background(), func() (*Session, error) {
			return Open(context.Background(), exposed, &Options{IntraOpThreads: threads, Mode: ModePacked})
		}},
		{"plain-constant", context.Background(), func() (*Session, error) {
			return OpenModel(context.Background(), plain, &Options{IntraOpThreads: threads})
		}},
	}
	for _, v := range variants {
		s, err := v.open()
		if err != nil {
			b.Fatal(err)
		}
		if v.name == "packed" && s.Mode() != ModePacked {
			b.Fatalf("packed session fell back: %s", s.FallbackReason())
		}
		for _, batch := range []int{1, 16} {
			x, err := tensor.FromFloat32([]int64{int64(batch), 1024}, ramp(batch*1024, batch))
			if err != nil {
				b.Fatal(err)
			}
			in := map[string]*tensor.Tensor{"X": x}
			b.Run(fmt.Sprintf("%s/batch=%d", v.name, batch), func(b *testing.B) {
				if _, err := s.Run(v.ctx, in); err != nil { // warm up
					b.Fatal(err)
				}
				for b.Loop() {
					if _, err := s.Run(v.ctx, in); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		s.Close()
	}
}

// benchModel writes X f32[batch, dim] -> layers x MatMul(W_i f32[dim, dim])
// -> Y as a plain model and exports it; it returns both paths.
func benchModel(tb testing.TB, dim, layers int) (plain, exposed string) {
	tb.Helper()
	rng := rand.New(rand.NewPCG(4, 4))
	b := onnxwire.NewBuilder()
	b.AddInput("X", tensor.Float32, []int64{-1, int64(dim)}, "batch")
	prev := "X"
	for i := range layers {
		w := make([]float32, dim*dim)
		for j := range w {
			w[j] = float32(rng.NormFloat64() / math.Sqrt(float64(dim)))
		}
		name := "W" + strconv.Itoa(i)
		b.AddInitializer(onnxwire.NewTensor(name, tensor.Float32, []int64{int64(dim), int64(dim)}, tensor.Bytes(w)))
		out := "h" + strconv.Itoa(i)
		if i == layers-1 {
			out = "Y"
		}
		b.AddNode("mm"+strconv.Itoa(i), "MatMul", []string{prev, name}, []string{out})
		prev = out
	}
	b.AddOutput("Y", tensor.Float32, []int64{-1, int64(dim)}, "batch")
	dir := tb.TempDir()
	plain = filepath.Join(dir, "plain.onnx")
	if err := b.WriteFile(plain); err != nil {
		tb.Fatal(err)
	}
	exposed = filepath.Join(dir, "exposed")
	if _, err := export.Expose(context.Background(), plain, exposed, export.Options{}); err != nil {
		tb.Fatal(err)
	}
	return plain, exposed
}

// BenchmarkRunContext measures what a cancellable context adds to a Run
// (pooled run options, a context.AfterFunc) on the tiny MLP, where the Run
// itself is a few microseconds.
//
//	go test -run '^$' -bench RunContext ./ort/
func BenchmarkRunContext(b *testing.B) {
	requireORT(b)
	s := mustOpen(b, testdata("mlp"), &Options{IntraOpThreads: 1, Mode: ModeLive})
	in := mlpInput(b, 1, 1)
	cancellable, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, c := range []struct {
		name string
		ctx  context.Context
	}{{"background", context.Background()}, {"cancellable", cancellable}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Run(c.ctx, in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSwitch measures one adapter switch (Set A, then Set B, ...; 2 %
// of every weight, overwrite) on the 4 × 1024² model of BenchmarkRun in a
// live session (scatter into the weights ORT reads unpacked) and a packed
// one (validate, translate to packed offsets, scatter into ORT's packed
// buffers). SHIRA_BENCH_THREADS sets the intra-op threads (default 1).
//
//	go test -run '^$' -bench Switch ./ort/
func BenchmarkSwitch(b *testing.B) {
	requireORT(b)
	_, exposed := benchModel(b, 1024, 4)
	m, err := export.Open(exposed)
	if err != nil {
		b.Fatal(err)
	}
	man := m.Manifest()
	m.Close()
	cfgs := [2]patch.Config{
		patch.Default(randomAdapter(b, man, 0.02, 1)),
		patch.Default(randomAdapter(b, man, 0.02, 2)),
	}
	for _, mode := range []Mode{ModeLive, ModePacked} {
		s, err := Open(context.Background(), exposed, &Options{IntraOpThreads: 1, Mode: mode})
		if err != nil {
			b.Fatal(err)
		}
		if s.Mode() != mode {
			b.Fatalf("%v session opened as %v: %s", mode, s.Mode(), s.FallbackReason())
		}
		b.Run(mode.String(), func(b *testing.B) {
			i := 0
			for b.Loop() {
				if err := s.Set(context.Background(), cfgs[i%2]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		s.Close()
	}
}
