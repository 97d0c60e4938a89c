//go:build linux

package patch

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/hugemem"
	"github.com/shira-ort/shira-ort/internal/prefetch"
	"github.com/shira-ort/shira-ort/tensor"
)

// BenchmarkFloor measures the cold switch A→B of a d×d weight (2
// workers, caches flushed before every timed operation) against its
// floors, side by side in one run, interleaved round by round, as
// medians:
//
//   - switch: Patcher.Set to the other adapter (A→B, B→A, ...), with the
//     weight in Go heap memory ("heap", 4 KiB pages), in a private file
//     mapping as ONNX Runtime sessions hold it ("file", 4 KiB pages once
//     written) and in anonymous memory advised MADV_HUGEPAGE ("huge",
//     package hugemem);
//   - pattern floor (floorKernel): the least work with the switch's
//     access pattern: every cache line in the union of A's and B's
//     touched lines, in address order, split in two halves over two
//     goroutines, read and written (one word), interleaved block by block
//     with reading the index and value streams and writing the saved
//     originals, all sequentially — the bytes the switch must move, moved
//     with the least compute;
//   - streaming floor: those bytes (128 per union line, plus the streams:
//     4+es per outgoing entry, 4+2·es per incoming one) over the 2-thread
//     copy bandwidth measured in the same rounds; "rmw GB/s" is the
//     bandwidth of reading and writing back every line of a large buffer
//     (the dense case of the pattern floor).
//
// One op is one round. Run with e.g. -benchtime=21x:
//
//	go test -run '^$' -bench Floor -benchtime=21x ./patch/
func BenchmarkFloor(b *testing.B) {
	if flushBuf == nil {
		flushBuf = make([]byte, 96<<20)
	}
	for _, dt := range []tensor.DType{tensor.Float32, tensor.Float16} {
		for _, d := range []int{4096, 8192} {
			for _, dens := range []float64{0.01, 0.02} {
				b.Run(fmt.Sprintf("%v/d=%d/%g%%", dt, d, dens*100), func(b *testing.B) { benchFloor(b, dt, d, dens) })
			}
		}
	}
}

// floorMem is one way of holding the weight.
type floorMem struct {
	name  string
	alloc func(tb testing.TB, base []byte) (data []byte, free func())
}

var floorMems = []floorMem{
	{"heap", func(_ testing.TB, base []byte) ([]byte, func()) {
		buf := make([]int64, (len(base)+7)/8)
		data := tensor.Bytes(buf)[:len(base)]
		copy(data, base)
		return data, func() {}
	}},
	{"file", func(tb testing.TB, base []byte) ([]byte, func()) {
		name := filepath.Join(tb.TempDir(), "weights.bin")
		if err := os.WriteFile(name, base, 0o600); err != nil {
			tb.Fatal(err)
		}
		f, err := os.Open(name)
		if err != nil {
			tb.Fatal(err)
		}
		defer f.Close()
		mem, err := unix.Mmap(int(f.Fd()), 0, len(base), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
		if err != nil {
			tb.Fatal(err)
		}
		return mem, func() { unix.Munmap(mem) }
	}},
	{"huge", func(_ testing.TB, base []byte) ([]byte, func()) {
		data, free := hugemem.Alloc(len(base))
		copy(data, base)
		return data, free
	}},
}

// floorSink keeps the floor kernel's reads alive; floorZero is 0 at run
// time, unknown to the compiler, so x ^= floorZero is a real load+store.
var (
	floorSink uint64
	floorZero uint64
)

func benchFloor(b *testing.B, dt tensor.DType, d int, dens float64) {
	const workers = 2
	base := benchWeights(dt, 1, []int64{int64(d), int64(d)})[0]
	A := benchAdapter([]Weight{base}, dt, adapter.Overwrite, dens, 1)
	B := benchAdapter([]Weight{base}, dt, adapter.Overwrite, dens, 2)
	cfgs := [2]Config{{A, 1}, {B, 1}}
	es := dt.Size()

	type variant struct {
		mem         floorMem
		w           Weight
		p           *Patcher
		sw, old, fl []float64
	}
	vs := make([]*variant, len(floorMems))
	for k, m := range floorMems {
		data, free := m.alloc(b, base.Data)
		b.Cleanup(free)
		w := base
		w.Data = data
		p, err := New([]Weight{w}, WithWorkers(workers))
		if err != nil {
			b.Fatal(err)
		}
		if err := p.Set(cfgs[0]); err != nil {
			b.Fatal(err)
		}
		vs[k] = &variant{mem: m, w: w, p: p}
	}

	// the pattern floor's data: union lines, and stream buffers of the
	// switch's sizes
	ta, tb := &A.Tensors[0], &B.Tensors[0]
	lines := unionLines(ta.Indices, tb.Indices, es)
	fk := floorKernel{
		lines: lines,
		read:  [][]byte{tensor.Bytes(ta.Indices), make([]byte, ta.NNZ()*es), tensor.Bytes(tb.Indices)},
		src:   tb.Values,
		dst:   make([]byte, tb.NNZ()*es),
	}
	streamBytes := int64(ta.NNZ()*(4+es) + tb.NNZ()*(4+2*es))
	floorBytes := 128*int64(len(lines)) + streamBytes

	const bwSize = 64 << 20
	src, dst := make([]byte, bwSize), make([]byte, bwSize)
	for i := range src {
		src[i] = byte(i)
	}
	copy(dst, src)
	var copyMs, rmwMs []float64
	var modeMs [len(touchModes)][]float64
	scratch, freeScratch := hugemem.Alloc(len(base.Data)) // for parallelTouch
	b.Cleanup(freeScratch)
	copy(scratch, base.Data)
	timed := func(f func()) float64 {
		flushCaches()
		t0 := time.Now()
		f()
		return float64(time.Since(t0)) / 1e6
	}
	round := 0
	for b.Loop() {
		if round == 2 { // the first two rounds are a warm-up (page faults, copy on write)
			for _, v := range vs {
				v.sw, v.old, v.fl = v.sw[:0], v.old[:0], v.fl[:0]
			}
			copyMs, rmwMs = copyMs[:0], rmwMs[:0]
			for m := range touchModes {
				modeMs[m] = modeMs[m][:0]
			}
		}
		round++
		for _, v := range vs {
			// the current kernel and the one before prefetching
			// (switchBlock 2048, noPrefetch), alternating which goes
			// first (A→B) and which second (B→A)
			for i := range 2 {
				old := (i+round)%2 == 0
				noPrefetch, switchBlock = old, 128
				if old {
					switchBlock = 2048
				}
				t := timed(func() {
					if err := v.p.Set(cfgs[1-i]); err != nil {
						b.Fatal(err)
					}
				})
				if old {
					v.old = append(v.old, t)
				} else {
					v.sw = append(v.sw, t)
				}
			}
			noPrefetch, switchBlock = false, 128
			fk.w = u64s(v.w.Data)
			v.fl = append(v.fl, timed(func() { fk.run(workers) }))
		}
		for m := range touchModes {
			modeMs[m] = append(modeMs[m], timed(func() { parallelTouch(u64s(scratch), lines, workers, m) }))
		}
		copyMs = append(copyMs, timed(func() { parallelCopy(dst, src, workers) }))
		rmwMs = append(rmwMs, timed(func() { parallelRMW(u64s(dst), workers) }))
	}
	b.StopTimer()
	bw := 2 * float64(bwSize) / (medianOf(copyMs) / 1e3)
	stream := float64(floorBytes) / bw * 1e3
	b.ReportMetric(bw/1e9, "copy-GB/s")
	b.ReportMetric(2*float64(bwSize)/(medianOf(rmwMs)/1e3)/1e9, "rmw-GB/s")
	b.ReportMetric(stream, "ms-stream-floor")
	b.ReportMetric(float64(len(lines)), "union-lines")
	for m, name := range touchModes {
		b.ReportMetric(medianOf(modeMs[m]), "ms-lines-"+name+"-huge")
	}
	for _, v := range vs {
		sw, fl := medianOf(v.sw), medianOf(v.fl)
		b.ReportMetric(medianOf(v.old), "ms-before-"+v.mem.name)
		b.ReportMetric(medianOf(v.old)/fl, "before/pattern-"+v.mem.name)
		b.ReportMetric(medianOf(v.old)/stream, "before/stream-"+v.mem.name)
		b.ReportMetric(sw, "ms-switch-"+v.mem.name)
		b.ReportMetric(fl, "ms-pattern-"+v.mem.name)
		b.ReportMetric(sw/fl, "sw/pattern-"+v.mem.name)
		b.ReportMetric(sw/stream, "sw/stream-"+v.mem.name)
		kb, _ := hugemem.AnonHugeKB(hugemem.AddrOf(v.w.Data), uintptr(len(v.w.Data)))
		b.ReportMetric(float64(kb)/1024, "MiB-thp-"+v.mem.name)
		// bit-exact: back to the base
		v.p.Revert()
		if !bytes.Equal(v.w.Data, base.Data) {
			b.Fatalf("%s: revert is not bit-exact", v.mem.name)
		}
		if err := v.p.Set(cfgs[0]); err != nil {
			b.Fatal(err)
		}
	}
}

// unionLines returns the sorted union of the 64-byte lines holding the
// elements (of es bytes) at the sorted indices a and b.
func unionLines(a, b []uint32, es int) []uint32 {
	shift := uint(4) // 16 elements of 4 bytes per line
	if es == 2 {
		shift = 5
	}
	var out []uint32
	add := func(l uint32) {
		if len(out) == 0 || out[len(out)-1] != l {
			out = append(out, l)
		}
	}
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		if j == len(b) || (i < len(a) && a[i] <= b[j]) {
			add(a[i] >> shift)
			i++
		} else {
			add(b[j] >> shift)
			j++
		}
	}
	return out
}

// floorKernel is the pattern floor of a switch (see BenchmarkFloor).
type floorKernel struct {
	w     []uint64 // the weight
	lines []uint32 // union lines, in address order
	read  [][]byte // streams read: outgoing indices and saved originals, incoming indices
	src   []byte   // incoming values, copied to
	dst   []byte   // the saved originals
}

// floorStep is the number of lines the pattern floor touches between two
// slices of the streams, and its prefetch distance.
const floorStep = 128

func (f *floorKernel) run(workers int) {
	var wg sync.WaitGroup
	for k := 1; k < workers; k++ {
		wg.Go(func() { f.part(k, workers) })
	}
	f.part(0, workers)
	wg.Wait()
}

// part does worker k's share (of n): a contiguous k-th of the lines and of
// every stream.
func (f *floorKernel) part(k, n int) {
	share := func(s []byte, k, n int) []byte { return s[len(s)*k/n/8*8 : len(s)*(k+1)/n/8*8] }
	lines := f.lines[len(f.lines)*k/n : len(f.lines)*(k+1)/n]
	var reads [3][]byte
	for i, s := range f.read {
		reads[i] = share(s, k, n)
	}
	src, dst := share(f.src, k, n), share(f.dst, k, n)
	blocks := (len(lines) + floorStep - 1) / floorStep
	w, x := f.w, floorZero
	wp := unsafe.Pointer(unsafe.SliceData(w))
	var sum uint64
	prefetch.T2(wp, lines[:min(floorStep, len(lines))], 6)
	for j := range blocks {
		lo, hi := j*floorStep, min((j+1)*floorStep, len(lines))
		prefetch.T2(wp, lines[hi:min(hi+floorStep, len(lines))], 6)
		for _, l := range lines[lo:hi] {
			w[uint(l)*8] ^= x
		}
		for _, s := range reads {
			sum += sumWords(u64s(share(s, j, blocks)))
		}
		copy(share(dst, j, blocks), share(src, j, blocks))
	}
	floorSink += sum
}

// sumWords reads s (four independent sums, so it is not latency bound).
func sumWords(s []uint64) uint64 {
	var a, b, c, d uint64
	for len(s) >= 4 {
		a, b, c, d = a+s[0], b+s[1], c+s[2], d+s[3]
		s = s[4:]
	}
	for _, v := range s {
		a += v
	}
	return a + b + c + d
}

// parallelCopy copies src into dst split in contiguous parts over n
// goroutines (the bandwidth reference of internal/switchbench).
func parallelCopy(dst, src []byte, n int) {
	var wg sync.WaitGroup
	part := (len(src)/n + 63) &^ 63
	for k := range n {
		lo, hi := min(k*part, len(src)), min((k+1)*part, len(src))
		wg.Go(func() { copy(dst[lo:hi], src[lo:hi]) })
	}
	wg.Wait()
}

// parallelRMW reads and writes back one word of every line of w, in
// contiguous parts over n goroutines.
func parallelRMW(w []uint64, n int) {
	var wg sync.WaitGroup
	x := floorZero
	for k := range n {
		part := w[len(w)*k/n : len(w)*(k+1)/n]
		wg.Go(func() {
			for i := 0; i < len(part); i += 8 {
				part[i] ^= x
			}
		})
	}
	wg.Wait()
}

// u64s views b (8-byte aligned; a trailing partial word is dropped) as
// words.
func u64s(b []byte) []uint64 {
	if len(b) < 8 {
		return nil
	}
	return unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/8)
}

var touchModes = [...]string{"rmw", "read", "write", "rmw+pf64", "rmw+pf128", "rmw+pf256"}

// parallelTouch touches the given lines of w only (no streams), split in
// halves over n goroutines: mode 0 reads and writes a word, 1 reads, 2
// writes, 3-5 read and write with prefetching 64, 128, 256 lines ahead.
func parallelTouch(w []uint64, lines []uint32, n, mode int) {
	var wg sync.WaitGroup
	x := floorZero
	for k := range n {
		part := lines[len(lines)*k/n : len(lines)*(k+1)/n]
		wg.Go(func() {
			var s uint64
			switch mode {
			case 0:
				for _, l := range part {
					w[uint(l)*8] ^= x
				}
			case 1:
				for _, l := range part {
					s += w[uint(l)*8]
				}
			case 2:
				for _, l := range part {
					w[uint(l)*8] = x
				}
			default:
				touchLines(w, part, 8<<mode)
			}
			floorSink += s
		})
	}
	wg.Wait()
}

// touchLines reads and writes back one word of each line of w in lines,
// in steps of step lines, prefetching the next step's lines first.
func touchLines(w []uint64, lines []uint32, step int) {
	x := floorZero
	wp := unsafe.Pointer(unsafe.SliceData(w))
	prefetch.T2(wp, lines[:min(step, len(lines))], 6)
	for j := 0; j < len(lines); j += step {
		e := min(j+step, len(lines))
		prefetch.T2(wp, lines[e:min(e+step, len(lines))], 6)
		for _, l := range lines[j:e] {
			w[uint(l)*8] ^= x
		}
	}
}
