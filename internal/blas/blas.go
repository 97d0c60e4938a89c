// Package blas runs single-precision matrix products (SGEMM) with a CBLAS
// library that it loads at run time with dlopen: OpenBLAS by default
// (Debian's libopenblas0-pthread), or the library the SHIRA_BLAS
// environment variable names. Building the project needs no BLAS headers
// and no link step; a process without the library still runs, and Load
// says why the fast path is off.
//
// It is the in-place LoRA kernel of package lora: W ← W + B·A as one GEMM
// with beta = 1, straight into the weight.
package blas

/*
#cgo LDFLAGS: -ldl
#include <stdlib.h>
#include "blas.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"strings"
	"sync"
	"unsafe"
)

// ErrUnavailable is wrapped by Load and Gemm.Run when no CBLAS library
// could be loaded.
var ErrUnavailable = errors.New("blas: no CBLAS library")

// Candidates are the libraries Load tries, in order, when SHIRA_BLAS is
// unset: OpenBLAS's sonames (the default build on Linux, then other
// spellings) and macOS's Accelerate.
var Candidates = []string{
	"libopenblas.so.0",
	"libopenblas.so",
	"libopenblas.dylib",
	"/System/Library/Frameworks/Accelerate.framework/Accelerate",
}

var (
	loadOnce sync.Once
	loadErr  error
	libPath  string

	// mu guards the library's thread count, which is global: products
	// that keep it run concurrently (read lock), a change waits for them
	// (write lock).
	mu      sync.RWMutex
	threads int // the thread count last set (0: none set yet)
)

// Load loads the CBLAS library once: the path in SHIRA_BLAS if set, else
// the first of Candidates that loads. Later calls return the first
// result. The error wraps ErrUnavailable and lists every attempt.
func Load() error {
	loadOnce.Do(func() {
		// OpenBLAS's idle worker threads spin for 2^28 cycles (about 0.1 s
		// of a core here) after every product before they sleep, taking a
		// core from whatever runs next — ONNX Runtime's Run, a SHiRA
		// switch. 2^4 cycles makes them sleep at once; OpenBLAS reads the
		// variable when it is loaded, so it is set here unless the user
		// chose a value.
		if _, set := os.LookupEnv("OPENBLAS_THREAD_TIMEOUT"); !set {
			os.Setenv("OPENBLAS_THREAD_TIMEOUT", "4")
		}
		paths := Candidates
		if p := os.Getenv("SHIRA_BLAS"); p != "" {
			paths = []string{p}
		}
		var tried []string
		for _, p := range paths {
			cp := C.CString(p)
			var cerr *C.char
			rc := C.shira_blas_load(cp, &cerr)
			C.free(unsafe.Pointer(cp))
			if rc == 0 {
				libPath = p
				return
			}
			tried = append(tried, fmt.Sprintf("%s: %s", p, C.GoString(cerr)))
		}
		loadErr = fmt.Errorf("%w (install OpenBLAS, e.g. Debian's libopenblas0-pthread, or set SHIRA_BLAS to a CBLAS library): %s",
			ErrUnavailable, strings.Join(tried, "; "))
	})
	return loadErr
}

// Name describes the loaded library: its path and, for OpenBLAS, the
// kernel it chose for this CPU ("libopenblas.so.0 (OpenBLAS Cooperlake)").
// It is empty when Load failed.
func Name() string {
	if Load() != nil {
		return ""
	}
	if c := C.shira_blas_corename(); c != nil {
		return fmt.Sprintf("%s (OpenBLAS %s)", libPath, C.GoString(c))
	}
	return libPath
}

// Gemm is one product C ← Alpha·op(A)·op(B) + Beta·C over row-major
// float32 matrices, where op(X) is X or, with TransX, its transpose:
// op(A) is M×K, op(B) K×N and C M×N. LDA, LDB and LDC are the row strides
// of A, B and C as stored (0: dense, the stored row length).
type Gemm struct {
	TransA, TransB bool
	M, N, K        int
	Alpha, Beta    float32
	A              []float32
	LDA            int
	B              []float32
	LDB            int
	C              []float32
	LDC            int
	// Threads is the number of threads the library uses (0: one per
	// core, runtime.NumCPU). The count is global to the library, so it is
	// set for every product, not left to whatever the previous one chose.
	// Libraries without a thread control (Accelerate) ignore it.
	Threads int
}

// Run checks the shapes against the slices and runs the product. Products
// with the same thread count run concurrently; one that changes the
// library's thread count, which is global to the process, waits for the
// others.
func (g *Gemm) Run() error {
	if err := Load(); err != nil {
		return err
	}
	// stored shapes: rows × cols of A, B and C as laid out in memory
	ar, ac := g.M, g.K
	if g.TransA {
		ar, ac = g.K, g.M
	}
	br, bc := g.K, g.N
	if g.TransB {
		br, bc = g.N, g.K
	}
	lda, err := checkMatrix("A", g.A, ar, ac, g.LDA)
	if err != nil {
		return err
	}
	ldb, err := checkMatrix("B", g.B, br, bc, g.LDB)
	if err != nil {
		return err
	}
	ldc, err := checkMatrix("C", g.C, g.M, g.N, g.LDC)
	if err != nil {
		return err
	}
	if g.M == 0 || g.N == 0 {
		return nil
	}
	if g.Threads < 0 {
		return fmt.Errorf("blas: %d threads", g.Threads)
	}
	want := g.Threads
	if want == 0 {
		want = runtime.NumCPU()
	}
	var a, b *C.float
	if g.K > 0 {
		a, b = (*C.float)(&g.A[0]), (*C.float)(&g.B[0])
	} else {
		// C ← Beta·C: CBLAS still wants valid pointers
		var z [1]float32
		a, b = (*C.float)(&z[0]), (*C.float)(&z[0])
		lda, ldb = max(lda, 1), max(ldb, 1)
	}
	mu.RLock()
	if want != threads {
		mu.RUnlock()
		mu.Lock()
		if want != threads && C.shira_blas_set_threads(C.int(want)) == 0 {
			threads = want
		}
		defer mu.Unlock()
	} else {
		defer mu.RUnlock()
	}
	C.shira_blas_sgemm(cbool(g.TransA), cbool(g.TransB), C.int(g.M), C.int(g.N), C.int(g.K), C.float(g.Alpha),
		a, C.int(lda), b, C.int(ldb), C.float(g.Beta), (*C.float)(&g.C[0]), C.int(ldc))
	return nil
}

// checkMatrix checks that s holds a rows×cols row-major matrix with row
// stride ld (0: cols) and returns the stride.
func checkMatrix(name string, s []float32, rows, cols, ld int) (int, error) {
	if rows < 0 || cols < 0 || ld < 0 {
		return 0, fmt.Errorf("blas: %s is %d×%d with stride %d", name, rows, cols, ld)
	}
	if ld == 0 {
		ld = max(cols, 1)
	}
	if ld < cols {
		return 0, fmt.Errorf("blas: %s has stride %d < %d columns", name, ld, cols)
	}
	if rows > math.MaxInt32 || cols > math.MaxInt32 || ld > math.MaxInt32 {
		return 0, fmt.Errorf("blas: %s is %d×%d with stride %d: beyond 32-bit BLAS dimensions", name, rows, cols, ld)
	}
	need := 0
	if rows > 0 && cols > 0 {
		need = (rows-1)*ld + cols
	}
	if len(s) < need {
		return 0, fmt.Errorf("blas: %s is %d×%d with stride %d (%d values) but has %d", name, rows, cols, ld, need, len(s))
	}
	return ld, nil
}

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// libThreads is the library's current thread count (0 without a thread
// control).
func libThreads() int { return int(C.shira_blas_threads()) }
