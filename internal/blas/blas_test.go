package blas

import (
	"errors"
	"math/rand/v2"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// requireBLAS fails under CI (where .ci/run installs OpenBLAS) and skips
// elsewhere when no CBLAS library loads.
func requireBLAS(t testing.TB) {
	t.Helper()
	if err := Load(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and %v", err)
		}
		t.Skip(err)
	}
}

// naive is C ← alpha·op(A)·op(B) + beta·C in float64.
func naive(g *Gemm) []float32 {
	out := append([]float32(nil), g.C...)
	ldc := max(g.LDC, g.N)
	at := func(s []float32, trans bool, ld, i, j int) float64 {
		if trans {
			return float64(s[j*ld+i])
		}
		return float64(s[i*ld+j])
	}
	lda, ldb := g.LDA, g.LDB
	if lda == 0 {
		lda = g.K
		if g.TransA {
			lda = g.M
		}
	}
	if ldb == 0 {
		ldb = g.N
		if g.TransB {
			ldb = g.K
		}
	}
	for i := range g.M {
		for j := range g.N {
			var s float64
			for p := range g.K {
				s += at(g.A, g.TransA, lda, i, p) * at(g.B, g.TransB, ldb, p, j)
			}
			out[i*ldc+j] = float32(float64(g.Alpha)*s + float64(g.Beta)*float64(g.C[i*ldc+j]))
		}
	}
	return out
}

func TestGemmMatchesReference(t *testing.T) {
	requireBLAS(t)
	t.Log(Name())
	rng := rand.New(rand.NewPCG(1, 2))
	rnd := func(n int) []float32 {
		s := make([]float32, n)
		for i := range s {
			s[i] = rng.Float32()*2 - 1
		}
		return s
	}
	for _, c := range []struct {
		ta, tb   bool
		m, n, k  int
		th       int
		beta     float32
		ldc, ldx int
	}{
		{false, false, 37, 53, 5, 1, 1, 0, 0},
		{true, true, 64, 17, 9, 2, 1, 0, 0},
		{false, true, 8, 300, 16, 0, 0, 0, 0},
		{true, false, 129, 31, 1, 2, 0.5, 40, 3},
	} {
		ar, ac := c.m, c.k
		if c.ta {
			ar, ac = c.k, c.m
		}
		br, bc := c.k, c.n
		if c.tb {
			br, bc = c.n, c.k
		}
		g := &Gemm{TransA: c.ta, TransB: c.tb, M: c.m, N: c.n, K: c.k, Alpha: -0.75, Beta: c.beta,
			A: rnd(ar * (ac + c.ldx)), LDA: ac + c.ldx, B: rnd(br * bc), C: rnd(c.m * max(c.ldc, c.n)), LDC: c.ldc, Threads: c.th}
		want := naive(g)
		if err := g.Run(); err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if d := want[i] - g.C[i]; d > 1e-5 || d < -1e-5 {
				t.Fatalf("%+v: C[%d] = %g, want %g", c, i, g.C[i], want[i])
			}
		}
	}
}

func TestGemmRejectsShortSlices(t *testing.T) {
	requireBLAS(t)
	c := make([]float32, 6)
	for _, g := range []*Gemm{
		{M: 2, N: 3, K: 4, A: make([]float32, 7), B: make([]float32, 12), C: c},
		{M: 2, N: 3, K: 4, A: make([]float32, 8), B: make([]float32, 11), C: c},
		{M: 2, N: 3, K: 4, A: make([]float32, 8), B: make([]float32, 12), C: c[:5]},
		{M: 2, N: 3, K: 4, A: make([]float32, 8), LDA: 3, B: make([]float32, 12), C: c},
		{TransB: true, M: 2, N: 3, K: 4, A: make([]float32, 8), B: make([]float32, 12), LDB: 3, C: c},
	} {
		c[0] = 42
		if err := g.Run(); err == nil {
			t.Fatalf("%+v: no error", g)
		}
		if c[0] != 42 {
			t.Fatal("C changed on error")
		}
	}
}

func TestLoadNamesTheLibraryOrSaysWhy(t *testing.T) {
	if err := Load(); err != nil {
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("%v does not wrap ErrUnavailable", err)
		}
		requireBLAS(t)
	}
	if Name() == "" {
		t.Fatal("empty Name after Load succeeded")
	}
}

// TestNoSpinAfterGemm checks that OpenBLAS's workers go to sleep after a
// product (OPENBLAS_THREAD_TIMEOUT, set by Load) instead of spinning for
// a tenth of a second of CPU.
func TestNoSpinAfterGemm(t *testing.T) {
	requireBLAS(t)
	d, k := 1024, 16
	g := &Gemm{M: d, N: d, K: k, Alpha: 1, Beta: 1, A: make([]float32, d*k), B: make([]float32, k*d), C: make([]float32, d*d), Threads: 2}
	if err := g.Run(); err != nil {
		t.Fatal(err)
	}
	c0 := cpuTime()
	time.Sleep(200 * time.Millisecond)
	if spent := cpuTime() - c0; spent > 30*time.Millisecond {
		t.Fatalf("%v of CPU time while idle for 200 ms after a product: BLAS threads spin", spent)
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestThreadsZeroMeansEveryCore: the thread count is global to the
// library, so a product with Threads 0 after one with Threads 1 must not
// run on the single thread the previous one left set.
func TestThreadsZeroMeansEveryCore(t *testing.T) {
	requireBLAS(t)
	g := func(th int) *Gemm {
		return &Gemm{M: 8, N: 8, K: 2, Alpha: 1, A: make([]float32, 16), B: make([]float32, 16), C: make([]float32, 64), Threads: th}
	}
	if err := g(1).Run(); err != nil {
		t.Fatal(err)
	}
	if err := g(0).Run(); err != nil {
		t.Fatal(err)
	}
	if n := libThreads(); n != 0 && n != runtime.NumCPU() {
		t.Fatalf("the library runs %d threads after a Threads 0 product, want %d", n, runtime.NumCPU())
	}
}
