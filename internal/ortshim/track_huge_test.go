package ortshim_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"unsafe"

	"github.com/shira-ort/shira-ort/internal/hugemem"
	"github.com/shira-ort/shira-ort/internal/ortshim"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/tensor"
)

// TestTrackingHugePages: a prepacked weight of 4 MiB, allocated through
// the tracking allocator, starts (its 64-byte header) on a 2 MiB boundary
// and, when transparent huge pages are enabled, lies in huge pages. Run
// outputs above 2 MiB go through the same path and the block cache; the
// cache is trimmed (munmap) without harm.
func TestTrackingHugePages(t *testing.T) {
	orttest.Require(t)
	if runtime.GOOS != "linux" {
		t.Skip("huge page backed blocks are Linux only")
	}
	const k, n = 1024, 1024 // packed: 4 MiB
	r := rand.New(rand.NewPCG(3, 4))
	w := make([]float32, k*n)
	for i := range w {
		w[i] = r.Float32() - 0.5
	}
	so, err := ortshim.NewSessionOptions()
	if err != nil {
		t.Fatal(err)
	}
	defer so.Release()
	if err := so.AddConfigEntry(ortshim.EnvAllocatorsKey, "1"); err != nil {
		t.Fatal(err)
	}
	var s *ortshim.Session
	rec, err := ortshim.Record(func() error {
		var err error
		s, err = ortshim.NewSessionFromBytes(matMulModel(w, k, n), so)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Release()
	defer s.Release()
	var big *ortshim.Block
	for i := range rec.Blocks {
		if b := &rec.Blocks[i]; len(b.Data) >= 4<<20 && (big == nil || len(b.Data) > len(big.Data)) {
			big = b
		}
	}
	if big == nil {
		t.Fatalf("no block of at least 4 MiB among %d recorded", len(rec.Blocks))
	}
	if err := rec.Keep([]int64{big.ID}); err != nil {
		t.Fatal(err)
	}
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(big.Data)))
	if addr%(2<<20) != 64 {
		t.Fatalf("block at %#x: its header is not on a 2 MiB boundary", addr)
	}
	if runtime.GOARCH == "amd64" && !bytes.Equal(big.Data, packRef(w, k, n)) {
		t.Fatal("the 4 MiB block is not the packed weight")
	}
	// a Run whose output (600 x 1024 fp32, 2.4 MiB) is a huge, cacheable block
	const batch = 600
	x := make([]float32, batch*k)
	for i := range x {
		x[i] = r.Float32()
	}
	in, out := ortshim.NewNames([]string{"X"}), ortshim.NewNames([]string{"Y"})
	defer in.Free()
	defer out.Free()
	for range 3 {
		xv, err := ortshim.NewTensorValue(tensor.Bytes(x), tensor.Float32, []int64{batch, k})
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.Run(nil, in, []*ortshim.Value{xv}, out)
		xv.Release()
		if err != nil {
			t.Fatal(err)
		}
		if got := res[0].Shape; fmt.Sprint(got) != fmt.Sprint([]int64{batch, n}) {
			t.Fatalf("output shape %v", got)
		}
	}
	t.Logf("allocator cache: %d bytes after Runs", ortshim.AllocatorCacheBytes())
	ortshim.TrimAllocatorCache()
	if c := ortshim.AllocatorCacheBytes(); c != 0 {
		t.Fatalf("cache holds %d bytes after trim", c)
	}
	switch mode := hugemem.THPMode(); mode {
	case "always", "madvise":
		kb, ok := hugemem.AnonHugeKB(addr, 1)
		if !ok {
			t.Fatalf("no mapping in /proc/self/smaps contains %#x", addr)
		}
		if kb == 0 {
			// the kernel found no free huge page (fragmented memory)
			t.Skipf("THP %q but the packed weight has AnonHugePages 0 (no free huge pages?)", mode)
		}
		t.Logf("packed weight: AnonHugePages %d kB", kb)
	default:
		t.Skipf("THP setting %q: AnonHugePages not checked", mode)
	}
}

// TestTrackingHugePagesOff: with huge page backed blocks turned off, a
// large prepacked weight comes from the C heap (the previous allocator)
// and is found, pinned and freed as before.
func TestTrackingHugePagesOff(t *testing.T) {
	orttest.Require(t)
	if runtime.GOARCH != "amd64" {
		t.Skip("the packed layout checked here is x86-64's")
	}
	const k, n = 1024, 1024
	r := rand.New(rand.NewPCG(5, 6))
	w := make([]float32, k*n)
	for i := range w {
		w[i] = r.Float32() - 0.5
	}
	so, err := ortshim.NewSessionOptions()
	if err != nil {
		t.Fatal(err)
	}
	defer so.Release()
	if err := so.AddConfigEntry(ortshim.EnvAllocatorsKey, "1"); err != nil {
		t.Fatal(err)
	}
	before := ortshim.TrackedRecords()
	prev := ortshim.SetHugePages(false)
	var s *ortshim.Session
	rec, err := ortshim.Record(func() error {
		var err error
		s, err = ortshim.NewSessionFromBytes(matMulModel(w, k, n), so)
		return err
	})
	ortshim.SetHugePages(prev)
	if err != nil {
		t.Fatal(err)
	}
	want := packRef(w, k, n)
	var keep []int64
	for _, b := range rec.Blocks {
		if bytes.Equal(b.Data, want) {
			keep = append(keep, b.ID)
		}
	}
	if len(keep) != 1 {
		t.Fatalf("%d blocks hold the packed weight, want 1", len(keep))
	}
	if err := rec.Keep(keep); err != nil {
		t.Fatal(err)
	}
	s.Release()
	if rec.Freed() != 1 {
		t.Fatalf("after ReleaseSession: %d pinned blocks freed by ORT, want 1", rec.Freed())
	}
	rec.Release()
	if after := ortshim.TrackedRecords(); after != before {
		t.Fatalf("tracked records: %d before, %d after release", before, after)
	}
}
