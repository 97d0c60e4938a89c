package ort

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/shira-ort/shira-ort/tensor"
)

// requireORT loads ONNX Runtime. Under CI=true a missing library fails the
// test; elsewhere the test is skipped with the command that fixes it.
func requireORT(tb testing.TB) {
	tb.Helper()
	if err := Init(); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("ONNX Runtime is required under CI=true: %v", err)
		}
		tb.Skipf("ONNX Runtime not available (run `shira-ort setup` or `make setup`): %v", err)
	}
}

func testdata(parts ...string) string {
	return filepath.Join(append([]string{"testdata"}, parts...)...)
}

func mustOpen(tb testing.TB, dir string, opts *Options) *Session {
	tb.Helper()
	s, err := Open(context.Background(), dir, opts)
	if err != nil {
		tb.Fatalf("Open(%s): %v", dir, err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func mustOpenModel(tb testing.TB, path string, opts *Options) *Session {
	tb.Helper()
	s, err := OpenModel(context.Background(), path, opts)
	if err != nil {
		tb.Fatalf("OpenModel(%s): %v", path, err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func mustRun(tb testing.TB, s *Session, in map[string]*tensor.Tensor) map[string]*tensor.Tensor {
	tb.Helper()
	out, err := s.Run(context.Background(), in)
	if err != nil {
		tb.Fatalf("Run: %v", err)
	}
	return out
}

func mustF32(tb testing.TB, shape []int64, v []float32) *tensor.Tensor {
	tb.Helper()
	t, err := tensor.FromFloat32(shape, v)
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

// ramp returns n deterministic values in [-1, 1).
func ramp(n int, seed int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32((i*7+seed*13)%19)/9.5 - 1
	}
	return v
}

// matmul multiplies row-major a[m,k] by b[k,n] in float64.
func matmul(a, b []float32, m, k, n int) []float32 {
	out := make([]float32, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var acc float64
			for p := 0; p < k; p++ {
				acc += float64(a[i*k+p]) * float64(b[p*n+j])
			}
			out[i*n+j] = float32(acc)
		}
	}
	return out
}

func assertClose(tb testing.TB, what string, got, want []float32, tol float64) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if math.Abs(float64(got[i]-want[i])) > tol*(1+math.Abs(float64(want[i]))) {
			tb.Fatalf("%s[%d] = %v, want %v (±%g)", what, i, got[i], want[i], tol)
		}
	}
}

func weightF32(tb testing.TB, s *Session, name string) []float32 {
	tb.Helper()
	b, err := s.Weight(name)
	if err != nil {
		tb.Fatal(err)
	}
	return append([]float32(nil), tensor.Float32s(b)...)
}

// weightBytes returns a copy of the exposed weight name (Session.Weight),
// failing the test on error.
func weightBytes(tb testing.TB, s *Session, name string) []byte {
	tb.Helper()
	b, err := s.Weight(name)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// liveWeight returns the session's own weight memory (what a live engine
// reads), for tests that write into it directly.
func liveWeight(s *Session, name string) []byte { return s.byName[name].data }

// providers returns Providers without options, by name.
func providers(names ...string) []Provider {
	out := make([]Provider, len(names))
	for i, n := range names {
		out[i] = Provider{Name: n}
	}
	return out
}
