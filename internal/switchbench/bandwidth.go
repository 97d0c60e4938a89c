package switchbench

import "sync"

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
