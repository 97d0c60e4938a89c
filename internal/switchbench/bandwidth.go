package switchbench

import (
	"sync"
	"unsafe"

	"github.com/shira-ort/shira-ort/internal/prefetch"
)

// CopyBandwidth measures the memory bandwidth of a large copy with the
// given number of threads: reps copies of size bytes (split evenly among
// the threads), counting the bytes read plus the bytes written (2·size)
// per copy. It returns the median in bytes per second.
func CopyBandwidth(size, threads, reps int) float64 {
	src, dst := copyBuffers(size)
	var s samples
	for range reps {
		s.time(func() error {
			parallelCopy(dst, src, threads)
			return nil
		})
	}
	ms := s.median()
	if ms == 0 {
		return 0
	}
	return 2 * float64(size) / (ms / 1e3)
}

// copyBuffers returns a source and a destination of size bytes with every
// page faulted in, so the first timed copy does not pay for page faults.
func copyBuffers(size int) (src, dst []byte) {
	src, dst = make([]byte, size), make([]byte, size)
	for i := range src {
		src[i] = byte(i)
	}
	copy(dst, src)
	return src, dst
}

// parallelCopy copies src into dst (of equal length), split evenly among
// threads goroutines on cache-line boundaries.
func parallelCopy(dst, src []byte, threads int) {
	threads = max(threads, 1)
	size := len(src)
	part := (size/threads + 63) &^ 63
	var wg sync.WaitGroup
	for k := range threads {
		lo, hi := min(k*part, size), min((k+1)*part, size)
		wg.Go(func() { copy(dst[lo:hi], src[lo:hi]) })
	}
	wg.Wait()
}

// floorMs is the time to move bytes at bw bytes/s, in milliseconds.
func floorMs(bytes int64, bw float64) float64 {
	if bw == 0 {
		return 0
	}
	return float64(bytes) / bw * 1e3
}

// linesTouched counts the distinct 64-byte cache lines that the sorted
// flat indices ix of elements of esize bytes fall in (assuming the
// buffer starts on a line boundary).
func linesTouched(ix []uint32, esize int) int64 {
	var n int64
	last := int64(-1)
	for _, i := range ix {
		if l := int64(i) * int64(esize) / 64; l != last {
			n++
			last = l
		}
	}
	return n
}

// applyBytes is the traffic floor of applying nnz entries on lines cache
// lines: every line read and written back, plus the index and value
// streams read and the saved originals written.
func applyBytes(lines int64, nnz, esize, vsize int) int64 {
	return 128*lines + int64(nnz)*int64(4+vsize+esize)
}

// revertBytes is the traffic floor of reverting: every line read and
// written back, plus the index and saved-original streams read.
func revertBytes(lines int64, nnz, esize int) int64 {
	return 128*lines + int64(nnz)*int64(4+esize)
}

// unionLines returns the sorted distinct 64-byte cache lines that the
// sorted flat indices a or b (elements of esize bytes) fall in: the lines
// a switch between them must read and write at least once.
func unionLines(a, b []uint32, esize int) []uint32 {
	out := make([]uint32, 0, len(a)+len(b))
	i, j := 0, 0
	last := int64(-1)
	for i < len(a) || j < len(b) {
		var x uint32
		if j == len(b) || (i < len(a) && a[i] <= b[j]) {
			x, i = a[i], i+1
		} else {
			x, j = b[j], j+1
		}
		if l := int64(x) * int64(esize) / 64; l != last {
			out = append(out, uint32(l))
			last = l
		}
	}
	return out
}

// pattern is the least work with the memory access pattern of a switch's
// weight lines: every cache line of the union of the outgoing and
// incoming adapters' entries read and written once, in address order,
// split over threads the way the switch splits them (contiguous address
// ranges), the lines of the next step prefetched like the switch's
// (package internal/prefetch). Its time, plus the switch's sequential
// streams at the copy bandwidth, is the pattern floor: what the machine
// can move with that access pattern.
type pattern struct {
	words []uint32   // the weight, viewed as 32-bit words
	lines [][]uint32 // per thread: line numbers
	zero  uint32     // xored into each line (kept in a field so the store stays)
}

// newPattern prepares the line pattern of a switch from the adapter with
// sorted indices a to the one with sorted indices b on the weight w
// (elements of esize bytes).
func newPattern(w []byte, esize int, a, b []uint32, threads int) *pattern {
	threads = max(threads, 1)
	lines := unionLines(a, b, esize)
	p := &pattern{words: unsafeWords(w)}
	for k := range threads {
		p.lines = append(p.lines, lines[k*len(lines)/threads:(k+1)*len(lines)/threads])
	}
	return p
}

// patternStep is the number of lines the pattern touches per step, and
// its prefetch distance (the switch's is 128 entries).
const patternStep = 128

// run does the pattern once.
func (p *pattern) run() {
	var wg sync.WaitGroup
	for k := range p.lines {
		wg.Go(func() {
			words, z, lines := p.words, p.zero, p.lines[k]
			base := unsafe.Pointer(unsafe.SliceData(words))
			prefetch.T2(base, lines[:min(patternStep, len(lines))], 6)
			for s := 0; s < len(lines); s += patternStep {
				e := min(s+patternStep, len(lines))
				prefetch.T2(base, lines[e:min(e+patternStep, len(lines))], 6)
				for _, l := range lines[s:e] {
					words[l*16] ^= z
				}
			}
		})
	}
	wg.Wait()
}

// unsafeWords views b (4-byte aligned, a multiple of 4 bytes long) as
// 32-bit words.
func unsafeWords(b []byte) []uint32 {
	if len(b) < 4 {
		return nil
	}
	return unsafe.Slice((*uint32)(unsafe.Pointer(&b[0])), len(b)/4)
}
