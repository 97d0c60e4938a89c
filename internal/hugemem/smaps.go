package hugemem

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"unsafe"
)

// THPMode returns the kernel's transparent huge page setting ("always",
// "madvise" or "never"), or "" where it cannot be read (not Linux).
func THPMode() string {
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil {
		return ""
	}
	s := string(b)
	if i, j := strings.IndexByte(s, '['), strings.IndexByte(s, ']'); i >= 0 && j > i {
		return s[i+1 : j]
	}
	return ""
}

// AnonHugeKB returns the kilobytes of transparent huge pages
// (AnonHugePages in /proc/self/smaps) in the mappings of this process that
// overlap the size bytes at addr, and false where that cannot be read (not
// Linux) or no mapping overlaps them: how the tests and benchmarks check
// that memory really is in huge pages. AddrOf gives a slice's address.
func AnonHugeKB(addr, size uintptr) (int64, bool) {
	if size == 0 {
		return 0, false
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	lo := uint64(addr)
	hi := lo + uint64(size)
	var total int64
	in, found := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) > 0 && !strings.HasSuffix(fields[0], ":") {
			s, e, ok := strings.Cut(fields[0], "-")
			if !ok {
				continue
			}
			a, err1 := strconv.ParseUint(s, 16, 64)
			z, err2 := strconv.ParseUint(e, 16, 64)
			in = err1 == nil && err2 == nil && a < hi && z > lo
			found = found || in
			continue
		}
		if in && len(fields) >= 2 && fields[0] == "AnonHugePages:" {
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			total += kb
		}
	}
	return total, found
}

// AddrOf returns the address of b's first byte (0 for an empty slice).
func AddrOf(b []byte) uintptr {
	if len(b) == 0 {
		return 0
	}
	return uintptr(unsafe.Pointer(unsafe.SliceData(b)))
}
