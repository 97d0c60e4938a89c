package registry_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/registry"
	"github.com/shira-ort/shira-ort/tensor"
)

// TestThousandAdapters registers 1000 small adapters with MaxOpen 8:
// registering maps nothing, the unused open adapters never exceed 8, and
// every counter is exact.
func TestThousandAdapters(t *testing.T) {
	m := tinyModel(t)
	dir := t.TempDir()
	var files [4][]byte // four distinct contents, 1000 files
	for i := range files {
		files[i] = encode(t, tinyAdapter(t, m, 8+8*i, 0.01*float32(i+1)))
	}
	size := func(i int) int64 { return int64(len(files[i%4])) }
	l := newLibrary(t, registry.Options{Model: m, MaxOpen: 8})
	name := func(i int) string { return fmt.Sprintf("a%04d", i) }
	for i := range 1000 {
		register(t, l, name(i), writeFile(t, dir, name(i)+".shira", files[i%4]))
	}
	checkStats(t, l, registry.Stats{Registered: 1000})
	for _, in := range l.Names() {
		if in.Open || in.InUse != 0 || in.Source != registry.SourceShira || in.Path != in.File {
			t.Fatalf("after Register: %+v", in)
		}
	}

	// Every adapter once, in order: 1000 misses, all but the last 8
	// evicted, never more than 8 open.
	var seen []*adapter.Adapter
	for i := range 1000 {
		a := acquire(t, l, name(i))
		if s := l.Stats(); s.Open-s.InUse > 8 || s.InUse != 1 {
			t.Fatalf("after Acquire %d: %+v", i, s)
		}
		l.Release(a)
		seen = append(seen, a)
	}
	var bytes int64
	for i := 992; i < 1000; i++ {
		bytes += size(i)
	}
	checkStats(t, l, registry.Stats{Registered: 1000, Open: 8, OpenBytes: bytes, Misses: 1000, Evictions: 992})
	for i, a := range seen {
		if a.Closed() != (i < 992) {
			t.Fatalf("adapter %d: Closed() = %v", i, a.Closed())
		}
	}

	// The 8 open ones are hits, and return the same adapter.
	for i := 992; i < 1000; i++ {
		if a := touch(t, l, name(i)); a != seen[i] {
			t.Fatalf("hit on %s returned another adapter", name(i))
		}
	}
	checkStats(t, l, registry.Stats{Registered: 1000, Open: 8, OpenBytes: bytes, Hits: 8, Misses: 1000, Evictions: 992})

	// 20 held at once: in use, so never evicted; the bound applies to
	// the unused ones.
	var held []*adapter.Adapter
	for i := range 20 {
		held = append(held, acquire(t, l, name(i)))
		if s := l.Stats(); s.Open-s.InUse > 8 || s.InUse != i+1 || s.Evictions != 992 {
			t.Fatalf("holding %d: %+v", i+1, s)
		}
	}
	for i, a := range held {
		l.Release(a)
		if s := l.Stats(); s.Open-s.InUse > 8 || s.InUse != 19-i {
			t.Fatalf("released %d: %+v", i+1, s)
		}
	}
	bytes = 0
	var want []string
	for i := 12; i < 20; i++ {
		bytes += size(i)
		want = append(want, name(i))
	}
	checkStats(t, l, registry.Stats{Registered: 1000, Open: 8, OpenBytes: bytes, Hits: 8, Misses: 1020, Evictions: 1012})
	if got := openNames(l); !slices.Equal(got, want) {
		t.Fatalf("open: %v, want %v", got, want)
	}
	for _, in := range l.Names() {
		if in.Open && in.Bytes != int64(len(files[0])) && in.Bytes != int64(len(files[1])) && in.Bytes != int64(len(files[2])) && in.Bytes != int64(len(files[3])) {
			t.Fatalf("%+v: Bytes is not the file size", in)
		}
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for i := 12; i < 20; i++ {
		if !held[i].Closed() {
			t.Fatalf("%s still open after Close", name(i))
		}
	}
	checkStats(t, l, registry.Stats{Hits: 8, Misses: 1020, Evictions: 1012})
}

// TestLRUOrder checks that the least recently used unused adapter is the
// one closed.
func TestLRUOrder(t *testing.T) {
	m := tinyModel(t)
	dir := t.TempDir()
	l := newLibrary(t, registry.Options{Model: m, MaxOpen: 3})
	b := encode(t, tinyAdapter(t, m, 4, 0.5))
	for _, n := range []string{"a", "b", "c", "d"} {
		register(t, l, n, writeFile(t, dir, n+".shira", b))
	}
	touch(t, l, "a")
	touch(t, l, "b")
	touch(t, l, "c")
	touch(t, l, "a") // a is now the most recent: b is the least
	touch(t, l, "d")
	if got := openNames(l); !slices.Equal(got, []string{"a", "c", "d"}) {
		t.Fatalf("open: %v, want [a c d]", got)
	}
	touch(t, l, "b") // evicts c
	if got := openNames(l); !slices.Equal(got, []string{"a", "b", "d"}) {
		t.Fatalf("open: %v, want [a b d]", got)
	}
	// Holding one does not make it evictable, and it does not count.
	d := acquire(t, l, "d")
	touch(t, l, "c") // a b c idle, d held
	if got := openNames(l); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
		t.Fatalf("open: %v, want [a b c d]", got)
	}
	l.Release(d) // d most recent: a goes
	if got := openNames(l); !slices.Equal(got, []string{"b", "c", "d"}) {
		t.Fatalf("open: %v, want [b c d]", got)
	}
	s := l.Stats()
	if s.Hits != 2 || s.Misses != 6 || s.Evictions != 3 {
		t.Fatalf("%+v", s)
	}
}

// TestByteBound checks MaxOpenBytes.
func TestByteBound(t *testing.T) {
	m := tinyModel(t)
	dir := t.TempDir()
	small := encode(t, tinyAdapter(t, m, 4, 0.5))
	big := encode(t, tinyAdapter(t, m, 400, 0.5))
	s, bg := int64(len(small)), int64(len(big))
	if bg < 2*s {
		t.Fatalf("sizes %d and %d", s, bg)
	}
	l := newLibrary(t, registry.Options{Model: m, MaxOpen: 100, MaxOpenBytes: bg + s})
	register(t, l, "s1", writeFile(t, dir, "s1.shira", small))
	register(t, l, "s2", writeFile(t, dir, "s2.shira", small))
	register(t, l, "big", writeFile(t, dir, "big.shira", big))
	huge := encode(t, fullAdapter(t, m))
	if int64(len(huge)) <= bg+s {
		t.Fatalf("sizes %d and %d", len(huge), bg+s)
	}
	register(t, l, "huge", writeFile(t, dir, "huge.shira", huge))

	touch(t, l, "s1")
	touch(t, l, "s2")
	checkStats(t, l, registry.Stats{Registered: 4, Open: 2, OpenBytes: 2 * s, Misses: 2})
	touch(t, l, "big") // s1 s2 big = 2s + bg > bound: s1 goes
	checkStats(t, l, registry.Stats{Registered: 4, Open: 2, OpenBytes: s + bg, Misses: 3, Evictions: 1})
	if got := openNames(l); !slices.Equal(got, []string{"big", "s2"}) {
		t.Fatalf("open: %v", got)
	}
	// An adapter larger than the bound may be used, and is closed at its
	// release, with everything else.
	a := acquire(t, l, "huge")
	if st := l.Stats(); st.Open != 3 || st.OpenBytes != s+bg+int64(len(huge)) {
		t.Fatalf("%+v", st)
	}
	l.Release(a)
	if !a.Closed() {
		t.Fatal("an adapter over the byte bound stayed open")
	}
	checkStats(t, l, registry.Stats{Registered: 4, Open: 2, OpenBytes: s + bg, Misses: 4, Evictions: 2})
}

// TestSingleflight checks that concurrent Acquires of one name open it
// once and share it.
func TestSingleflight(t *testing.T) {
	m := tinyModel(t)
	l := newLibrary(t, registry.Options{Model: m})
	register(t, l, "a", writeFile(t, t.TempDir(), "a.shira", encode(t, tinyAdapter(t, m, 16, 0.5))))
	const n = 16
	start := make(chan struct{})
	got := make(chan *adapter.Adapter, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			<-start
			a, err := l.Acquire(context.Background(), "a")
			if err != nil {
				errs <- err
				return
			}
			got <- a
		}()
	}
	close(start)
	var as []*adapter.Adapter
	for range n {
		select {
		case a := <-got:
			as = append(as, a)
		case err := <-errs:
			t.Fatal(err)
		}
	}
	for _, a := range as {
		if a != as[0] {
			t.Fatal("concurrent Acquires returned different adapters")
		}
	}
	s := l.Stats()
	if s.Misses != 1 || s.Hits != n-1 || s.Open != 1 || s.InUse != 1 {
		t.Fatalf("%+v", s)
	}
	if in := l.Names()[0]; in.InUse != n {
		t.Fatalf("%+v", in)
	}
	for _, a := range as {
		l.Release(a)
	}
	if s := l.Stats(); s.InUse != 0 || s.Open != 1 {
		t.Fatalf("%+v", s)
	}
}

// TestUnregisterInUse checks that an unregistered adapter stays usable by
// its holder until the last Release, which unmaps it.
func TestUnregisterInUse(t *testing.T) {
	m := tinyModel(t)
	l := newLibrary(t, registry.Options{Model: m})
	path := writeFile(t, t.TempDir(), "a.shira", encode(t, tinyAdapter(t, m, 16, 0.5)))
	register(t, l, "a", path)
	a1 := acquire(t, l, "a")
	a2 := acquire(t, l, "a")
	if err := l.Unregister("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(t.Context(), "a"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Acquire after Unregister: %v", err)
	}
	if err := l.Unregister("a"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("second Unregister: %v", err)
	}
	checkStats(t, l, registry.Stats{Open: 1, OpenBytes: l.Stats().OpenBytes, InUse: 1, Hits: 1, Misses: 1})
	// Still usable: a patcher takes it (Retain succeeds) and reads it.
	fused, err := m.Fuse(t.Context(), []patch.Config{patch.Default(a1)})
	if err != nil {
		t.Fatalf("fuse an unregistered adapter still held: %v", err)
	}
	base, _ := m.ReadWeight("fc1.weight")
	if string(fused["fc1.weight"]) == string(base) {
		t.Fatal("fusing changed nothing")
	}
	// The name can be registered again meanwhile; it is another adapter.
	register(t, l, "a", path)
	a3 := acquire(t, l, "a")
	if a3 == a1 {
		t.Fatal("re-registered name returned the unregistered adapter")
	}
	l.Release(a3)
	l.Release(a1)
	if a1.Closed() {
		t.Fatal("closed while still held once")
	}
	l.Release(a2)
	if !a1.Closed() {
		t.Fatal("not closed after its last Release")
	}
	if err := a1.Retain(); !errors.Is(err, adapter.ErrClosed) {
		t.Fatalf("Retain after the last Release: %v", err)
	}
	if s := l.Stats(); s.Open != 1 || s.InUse != 0 || s.Registered != 1 {
		t.Fatalf("%+v", s)
	}
	// Unregistering an unused open adapter closes it at once.
	if err := l.Unregister("a"); err != nil {
		t.Fatal(err)
	}
	if !a3.Closed() {
		t.Fatal("unused adapter not closed by Unregister")
	}
	checkStats(t, l, registry.Stats{Hits: 1, Misses: 2})
}

// TestInvalidFile checks that a file failing validation is an
// ErrInvalidAdapter, is not kept, and that a fixed file then works.
func TestInvalidFile(t *testing.T) {
	m := tinyModel(t)
	l := newLibrary(t, registry.Options{Model: m})
	dir := t.TempDir()
	path := writeFile(t, dir, "a.shira", []byte("this is not a shira file at all"))
	register(t, l, "a", path) // Register does not read the file
	_, err := l.Acquire(t.Context(), "a")
	if !errors.Is(err, registry.ErrInvalidAdapter) || !errors.Is(err, adapter.ErrInvalid) {
		t.Fatalf("Acquire of a corrupt file: %v", err)
	}
	checkStats(t, l, registry.Stats{Registered: 1, Misses: 1})

	// Non-finite values: adapter.Open refuses them.
	good := encode(t, tinyAdapter(t, m, 16, 0.375))
	nan := replaceFloat32(good, 0.375, float32(math.NaN()))
	if string(nan) == string(good) {
		t.Fatal("no value replaced")
	}
	if err := os.WriteFile(path, nan, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = l.Acquire(t.Context(), "a")
	if !errors.Is(err, registry.ErrInvalidAdapter) || !errors.Is(err, adapter.ErrNonFinite) {
		t.Fatalf("Acquire of a NaN adapter: %v", err)
	}
	checkStats(t, l, registry.Stats{Registered: 1, Misses: 2})

	// Fixed on disk: the next Acquire reads it again.
	if err := adapter.Write(path, tinyAdapter(t, m, 16, 0.375)); err != nil {
		t.Fatal(err)
	}
	a := acquire(t, l, "a")
	l.Release(a)
	checkStats(t, l, registry.Stats{Registered: 1, Open: 1, OpenBytes: int64(len(good)), Misses: 3})

	// A file removed since registration.
	gone := writeFile(t, dir, "gone.shira", good)
	register(t, l, "gone", gone)
	os.Remove(gone)
	if _, err := l.Acquire(t.Context(), "gone"); !errors.Is(err, fs.ErrNotExist) || errors.Is(err, registry.ErrInvalidAdapter) {
		t.Fatalf("Acquire of a removed file: %v", err)
	}
}

// TestWrongModel checks the validation against the model: fingerprint,
// target names, shapes, dtypes, base weights.
func TestWrongModel(t *testing.T) {
	m := tinyModel(t)
	l := newLibrary(t, registry.Options{Model: m})
	dir := t.TempDir()
	base, err := m.ReadWeight("fc1.weight")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		change func(a *adapter.Adapter)
		want   error
	}{
		{"fingerprint", func(a *adapter.Adapter) { a.ModelFingerprint = strings.Repeat("ab", 32) }, patch.ErrFingerprint},
		{"target", func(a *adapter.Adapter) { a.Tensors[0].Name = "fc9.weight" }, patch.ErrUnknownTarget},
		{"shape", func(a *adapter.Adapter) { a.Tensors[0].Shape = []int64{32, 16} }, patch.ErrMismatch},
		{"dtype", func(a *adapter.Adapter) { a.Tensors[0].DType = tensor.Float16 }, patch.ErrMismatch},
		{"base", func(a *adapter.Adapter) { a.Tensors[0].BaseSHA256[0] = 1 }, patch.ErrFingerprint},
		{"ok-with-base", func(a *adapter.Adapter) { a.Tensors[0].BaseSHA256 = sha256Of(base) }, nil},
		{"ok-no-fingerprint", func(a *adapter.Adapter) { a.ModelFingerprint = "" }, nil},
	} {
		a := tinyAdapter(t, m, 8, 0.25)
		c.change(a)
		register(t, l, c.name, writeFile(t, dir, c.name+".shira", encode(t, a)))
		got, err := l.Acquire(t.Context(), c.name)
		if c.want == nil {
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			l.Release(got)
			continue
		}
		if !errors.Is(err, registry.ErrInvalidAdapter) || !errors.Is(err, c.want) {
			t.Fatalf("%s: %v (want ErrInvalidAdapter and %v)", c.name, err, c.want)
		}
	}
	if s := l.Stats(); s.Open != 2 || s.Misses != 7 {
		t.Fatalf("%+v", s)
	}
}

// TestNames checks name validation and duplicate names.
func TestNames(t *testing.T) {
	m := tinyModel(t)
	l := newLibrary(t, registry.Options{Model: m})
	path := writeFile(t, t.TempDir(), "a.shira", encode(t, tinyAdapter(t, m, 4, 0.5)))
	for _, bad := range []string{"", "a/b", "a,b", "a@1", "a\x00b", "a\nb", "tab\there", "del\x7f", "\u0085next", "\xff\xfe",
		strings.Repeat("x", registry.MaxNameLen+1)} {
		if err := l.Register(t.Context(), bad, path); !errors.Is(err, registry.ErrInvalidName) {
			t.Errorf("Register(%q): %v", bad, err)
		}
		if err := registry.CheckName(bad); !errors.Is(err, registry.ErrInvalidName) {
			t.Errorf("CheckName(%q): %v", bad, err)
		}
	}
	good := []string{"style-a", "Style A.v2", "日本語", "a:b", strings.Repeat("y", registry.MaxNameLen)}
	for _, n := range good {
		register(t, l, n, path) // two names may share one file
	}
	if err := l.Register(t.Context(), "style-a", path); !errors.Is(err, registry.ErrExists) {
		t.Fatalf("duplicate Register: %v", err)
	}
	var got []string
	for _, in := range l.Names() {
		got = append(got, in.Name)
	}
	slices.Sort(good)
	if !slices.Equal(got, good) {
		t.Fatalf("Names: %q, want %q", got, good)
	}
	a, b := acquire(t, l, "style-a"), acquire(t, l, "日本語")
	if a == b {
		t.Fatal("two names share one adapter value")
	}
	l.Release(a)
	l.Release(b)
	if _, err := l.Acquire(t.Context(), "nope"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Acquire of an unknown name: %v", err)
	}
}

// TestRegisterPaths checks what Register refuses.
func TestRegisterPaths(t *testing.T) {
	m := tinyModel(t)
	l := newLibrary(t, registry.Options{Model: m})
	dir := t.TempDir()
	if err := l.Register(t.Context(), "missing", filepath.Join(dir, "missing.shira")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if err := l.Register(t.Context(), "dir", dir); !errors.Is(err, registry.ErrInvalidAdapter) {
		t.Fatalf("plain directory: %v", err)
	}
	fifo := filepath.Join(dir, "fifo.shira")
	if err := mkfifo(fifo); err == nil {
		if err := l.Register(t.Context(), "fifo", fifo); !errors.Is(err, registry.ErrInvalidAdapter) {
			t.Fatalf("FIFO: %v", err)
		}
	}
	if s := l.Stats(); s.Registered != 0 {
		t.Fatalf("%+v", s)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := l.Register(ctx, "x", dir); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Register: %v", err)
	}
	if _, err := l.Acquire(ctx, "x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Acquire: %v", err)
	}
}

// TestFileChanged checks that an adapter file replaced on disk is read
// anew at its next open (not while it stays open).
func TestFileChanged(t *testing.T) {
	m := tinyModel(t)
	l := newLibrary(t, registry.Options{Model: m, MaxOpen: 1})
	dir := t.TempDir()
	path := filepath.Join(dir, "a.shira")
	if err := adapter.Write(path, tinyAdapter(t, m, 4, 0.5)); err != nil {
		t.Fatal(err)
	}
	register(t, l, "a", path)
	register(t, l, "b", writeFile(t, dir, "b.shira", encode(t, tinyAdapter(t, m, 4, 0.5))))
	if a := touch(t, l, "a"); a.NNZ() != 4 {
		t.Fatal(a.NNZ())
	}
	if err := adapter.Write(path, tinyAdapter(t, m, 12, 0.5)); err != nil { // atomic rename
		t.Fatal(err)
	}
	if a := touch(t, l, "a"); a.NNZ() != 4 {
		t.Fatalf("open adapter changed: nnz %d", a.NNZ())
	}
	touch(t, l, "b") // evicts a
	if a := touch(t, l, "a"); a.NNZ() != 12 {
		t.Fatalf("reopened adapter: nnz %d, want 12", a.NNZ())
	}
	if in := l.Names()[0]; in.Bytes != fileSize(t, path) {
		t.Fatalf("%+v: size %d", in, fileSize(t, path))
	}
}

// TestClose checks Close: unused adapters are closed at once, acquired
// ones at their Release, and every later call fails with ErrClosed.
func TestClose(t *testing.T) {
	m := tinyModel(t)
	dir := t.TempDir()
	l, err := registry.New(registry.Options{Model: m, Logger: quiet, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	b := encode(t, tinyAdapter(t, m, 4, 0.5))
	register(t, l, "a", writeFile(t, dir, "a.shira", b))
	register(t, l, "b", writeFile(t, dir, "b.shira", b))
	idle := touch(t, l, "a")
	held := acquire(t, l, "b")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if !idle.Closed() || held.Closed() {
		t.Fatalf("after Close: idle closed %v, held closed %v", idle.Closed(), held.Closed())
	}
	if _, err := l.Acquire(t.Context(), "a"); !errors.Is(err, registry.ErrClosed) {
		t.Fatalf("Acquire: %v", err)
	}
	if err := l.Register(t.Context(), "c", dir); !errors.Is(err, registry.ErrClosed) {
		t.Fatalf("Register: %v", err)
	}
	if err := l.Unregister("b"); !errors.Is(err, registry.ErrClosed) {
		t.Fatalf("Unregister: %v", err)
	}
	if _, err := l.RegisterDir(t.Context(), dir); !errors.Is(err, registry.ErrClosed) {
		t.Fatalf("RegisterDir: %v", err)
	}
	if len(l.Names()) != 0 {
		t.Fatal(l.Names())
	}
	l.Release(held)
	if !held.Closed() {
		t.Fatal("held adapter not closed by its Release after Close")
	}
	checkStats(t, l, registry.Stats{Misses: 2})
}

// TestReleaseForeign checks that releasing an adapter the library did not
// hand out panics.
func TestReleaseForeign(t *testing.T) {
	m := tinyModel(t)
	l := newLibrary(t, registry.Options{Model: m})
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	l.Release(tinyAdapter(t, m, 4, 0.5))
}

// TestOptions checks New's refusals.
func TestOptions(t *testing.T) {
	m := tinyModel(t)
	for _, o := range []registry.Options{
		{},
		{Model: m, MaxOpen: -1},
		{Model: m, MaxOpenBytes: -1},
		{Model: m, LoraDensity: -0.1},
		{Model: m, LoraDensity: 1.5},
		{Model: m, LoraDensity: math.NaN()},
	} {
		if l, err := registry.New(o); err == nil {
			l.Close()
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

// TestClosedByHolder checks that an adapter a holder closed (against
// Acquire's contract) is opened again by the next Acquire.
func TestClosedByHolder(t *testing.T) {
	m := tinyModel(t)
	l := newLibrary(t, registry.Options{Model: m})
	register(t, l, "a", writeFile(t, t.TempDir(), "a.shira", encode(t, tinyAdapter(t, m, 4, 0.5))))
	a := acquire(t, l, "a")
	a.Close()
	l.Release(a)
	b := touch(t, l, "a")
	if b == a || b.Closed() {
		t.Fatal("the closed adapter was handed out again")
	}
	if s := l.Stats(); s.Open != 1 || s.Misses != 2 || s.Hits != 0 {
		t.Fatalf("%+v", s)
	}
}
