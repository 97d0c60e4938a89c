package hugemem

import (
	"runtime"
	"testing"
)

func addrOf(b []byte) uintptr { return AddrOf(b) }

// anonHugeKB is AnonHugeKB of the page at addr.
func anonHugeKB(t *testing.T, addr uintptr) (int, bool) {
	t.Helper()
	kb, ok := AnonHugeKB(addr, 1)
	return int(kb), ok
}

func TestAllocAlignedZeroedUsable(t *testing.T) {
	for _, n := range []int{1, 4095, PageSize - 1, PageSize, PageSize + 1, 3*PageSize + 12345} {
		b, free := Alloc(n)
		if free == nil {
			t.Fatalf("Alloc(%d): nil free", n)
		}
		if len(b) != n || cap(b) != n {
			t.Fatalf("Alloc(%d): len %d cap %d", n, len(b), cap(b))
		}
		if runtime.GOOS == "linux" {
			if a := addrOf(b); a%PageSize != 0 {
				t.Fatalf("Alloc(%d) at %#x: not aligned to %d", n, a, PageSize)
			}
		} else if a := addrOf(b); a%64 != 0 {
			t.Fatalf("Alloc(%d) at %#x: not aligned to 64", n, a)
		}
		for i, v := range b {
			if v != 0 {
				t.Fatalf("Alloc(%d): byte %d is %d, want 0", n, i, v)
			}
		}
		for i := range b {
			b[i] = byte(i*7 + 1)
		}
		for i, v := range b {
			if v != byte(i*7+1) {
				t.Fatalf("Alloc(%d): byte %d reads %d after writing %d", n, i, v, byte(i*7+1))
			}
		}
		free()
	}
}

// TestAllocFreeUnmaps: after free the mapping is gone (Linux), and many
// alloc/free cycles do not grow the process's mappings.
func TestAllocFreeUnmaps(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("mappings are Linux only")
	}
	const n = 8 << 20
	b, free := Alloc(n)
	b[0], b[n-1] = 1, 2
	a := addrOf(b)
	if _, ok := anonHugeKB(t, a); !ok {
		t.Fatalf("no mapping contains the buffer at %#x", a)
	}
	free()
	if _, ok := anonHugeKB(t, a); ok {
		// another mapping may have taken the range meanwhile, but not
		// in this single-goroutine test normally
		t.Logf("a mapping still contains %#x after free (reused?)", a)
	}
	for range 200 {
		b, free := Alloc(n)
		b[n/2] = 1
		free()
	}
}

func TestAllocHugePages(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("transparent huge pages are Linux only")
	}
	mode := THPMode()
	if mode != "always" && mode != "madvise" {
		t.Skipf("transparent huge pages %q", mode)
	}
	const n = 64 << 20
	b, free := Alloc(n)
	defer free()
	for i := 0; i < n; i += 4096 {
		b[i] = 1
	}
	kb, ok := anonHugeKB(t, addrOf(b))
	if !ok {
		t.Fatal("no mapping contains the buffer")
	}
	if kb == 0 {
		t.Skipf("THP %q but AnonHugePages 0 for a 64 MiB buffer (no free huge pages?)", mode)
	}
	t.Logf("64 MiB buffer: AnonHugePages %d kB", kb)
}

func TestAllocEmpty(t *testing.T) {
	for _, n := range []int{0, -1, -PageSize} {
		b, free := Alloc(n)
		if b != nil || free == nil {
			t.Fatalf("Alloc(%d) = %v, free nil %v; want nil and a no-op free", n, b, free == nil)
		}
		free()
	}
}

// TestHeapFallback is the path Alloc takes when the mapping fails (and
// Alloc everywhere but Linux): a 64-byte aligned Go slice, zeroed, and a
// no-op free; nil for n <= 0.
func TestHeapFallback(t *testing.T) {
	for _, n := range []int{0, -5} {
		b, free := heap(n)
		if b != nil || free == nil {
			t.Fatalf("heap(%d) = %v, free nil %v", n, b, free == nil)
		}
		free()
	}
	for _, n := range []int{1, 63, 64, 1000, 1 << 20} {
		b, free := heap(n)
		if len(b) != n || cap(b) != n {
			t.Fatalf("heap(%d): len %d cap %d", n, len(b), cap(b))
		}
		if a := addrOf(b); a%64 != 0 {
			t.Fatalf("heap(%d) at %#x: not 64-byte aligned", n, a)
		}
		for i, v := range b {
			if v != 0 {
				t.Fatalf("heap(%d): byte %d is %d", n, i, v)
			}
		}
		for i := range b {
			b[i] = byte(i)
		}
		free()
		if b[n-1] != byte(n-1) { // still usable: the garbage collector owns it
			t.Fatalf("heap(%d): last byte changed", n)
		}
	}
}
