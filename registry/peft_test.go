package registry_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/mask"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/internal/pefttest"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/peft"
	"github.com/shira-ort/shira-ort/registry"
)

// copyCheckpoint copies the PEFT fixture checkpoint src (models/peft/SRC)
// into dir/name and returns its path.
func copyCheckpoint(tb testing.TB, src, dir, name string) string {
	tb.Helper()
	out := filepath.Join(dir, name)
	if err := os.MkdirAll(out, 0o755); err != nil {
		tb.Fatal(err)
	}
	for _, f := range []string{peft.ConfigFile, peft.WeightsFile} {
		b, err := os.ReadFile(pefttest.Path(src, f))
		if err != nil {
			tb.Fatal(err)
		}
		writeFile(tb, out, f, b)
	}
	return out
}

// TestPeftShira checks that a PEFT SHiRA checkpoint is converted once, at
// Register, into the cache, and found there by a new library.
func TestPeftShira(t *testing.T) {
	m := pefttest.Open(t, "base")
	cache := filepath.Join(t.TempDir(), "cache")
	ckpt := copyCheckpoint(t, "shira_a", t.TempDir(), "shira_a")

	l := newLibrary(t, registry.Options{Model: m, CacheDir: cache})
	register(t, l, "a", ckpt)
	if s := l.Stats(); s.Conversions != 1 || s.Open != 0 || s.Registered != 1 {
		t.Fatalf("%+v", s)
	}
	in := l.Names()[0]
	if in.Source != registry.SourcePeftShira || in.Path != ckpt || filepath.Dir(in.File) != cache || !strings.HasSuffix(in.File, ".shira") {
		t.Fatalf("%+v", in)
	}
	st1, err := os.Stat(in.File)
	if err != nil {
		t.Fatal(err)
	}

	// The adapter is what `shira-ort convert --peft` gives.
	ck, err := peft.Open(ckpt)
	if err != nil {
		t.Fatal(err)
	}
	want, _, err := peft.ConvertShira(ck, m, peft.ConvertOptions{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	a := acquire(t, l, "a")
	if a.Name != "a" || a.NNZ() != want.NNZ() || len(a.Tensors) != len(want.Tensors) || a.ModelFingerprint != m.Fingerprint() {
		t.Fatalf("converted adapter: %q nnz %d tensors %d, want nnz %d tensors %d", a.Name, a.NNZ(), len(a.Tensors), want.NNZ(), len(want.Tensors))
	}
	for i := range a.Tensors {
		if !slices.Equal(a.Tensors[i].Indices, want.Tensors[i].Indices) || string(a.Tensors[i].Values) != string(want.Tensors[i].Values) {
			t.Fatalf("tensor %s differs from peft.ConvertShira's", a.Tensors[i].Name)
		}
	}
	if _, err := m.Fuse(t.Context(), []patch.Config{patch.Default(a)}); err != nil {
		t.Fatal(err)
	}
	l.Release(a)

	// A new library on the same cache (a restart) converts nothing.
	l2 := newLibrary(t, registry.Options{Model: m, CacheDir: cache})
	register(t, l2, "a", ckpt)
	if s := l2.Stats(); s.Conversions != 0 {
		t.Fatalf("restart converted again: %+v", s)
	}
	in2 := l2.Names()[0]
	st2, err := os.Stat(in2.File)
	if err != nil {
		t.Fatal(err)
	}
	if in2.File != in.File || !st2.ModTime().Equal(st1.ModTime()) || !os.SameFile(st1, st2) {
		t.Fatalf("cached file rewritten: %s %v -> %s %v", in.File, st1.ModTime(), in2.File, st2.ModTime())
	}
	touch(t, l2, "a")

	// Unregistered and registered again in the same library: cached too.
	if err := l.Unregister("a"); err != nil {
		t.Fatal(err)
	}
	register(t, l, "a", ckpt)
	if s := l.Stats(); s.Conversions != 1 {
		t.Fatalf("%+v", s)
	}

	// Changed checkpoint bytes: another key, converted again.
	b, err := os.ReadFile(pefttest.Path("shira_b", peft.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, ckpt, peft.WeightsFile, b)
	if err := l.Unregister("a"); err != nil {
		t.Fatal(err)
	}
	register(t, l, "a", ckpt)
	if s := l.Stats(); s.Conversions != 2 {
		t.Fatalf("changed checkpoint not converted again: %+v", s)
	}
	if f := l.Names()[0].File; f == in.File {
		t.Fatal("changed checkpoint got the same cache file")
	}
	touch(t, l, "a")

	// A checkpoint for another model does not convert.
	tiny := tinyModel(t)
	l3 := newLibrary(t, registry.Options{Model: tiny, CacheDir: cache})
	if err := l3.Register(t.Context(), "a", ckpt); !errors.Is(err, registry.ErrInvalidAdapter) || !errors.Is(err, peft.ErrNoMatch) {
		t.Fatalf("checkpoint for another model: %v", err)
	}
	if s := l3.Stats(); s.Registered != 0 || s.Conversions != 0 {
		t.Fatalf("%+v", s)
	}
}

// TestLoraRefused checks that LoRA checkpoints are refused when
// LoraDensity is 0, and that a cached conversion is then not looked up.
func TestLoraRefused(t *testing.T) {
	m := pefttest.Open(t, "base")
	l := newLibrary(t, registry.Options{Model: m})
	err := l.Register(t.Context(), "lora", pefttest.Path("lora"))
	if !errors.Is(err, registry.ErrInvalidAdapter) || !strings.Contains(err.Error(), "LoraDensity") {
		t.Fatalf("LoRA with LoraDensity 0: %v", err)
	}
	if s := l.Stats(); s.Registered != 0 {
		t.Fatalf("%+v", s)
	}
}

// TestPeftLora converts a PEFT LoRA checkpoint (top-k of scale·B·A with
// ONNX Runtime) at Register, once.
func TestPeftLora(t *testing.T) {
	orttest.Require(t)
	m := pefttest.Open(t, "base")
	cache := filepath.Join(t.TempDir(), "cache")
	l := newLibrary(t, registry.Options{Model: m, CacheDir: cache, LoraDensity: 0.05})
	register(t, l, "lora", pefttest.Path("lora"))
	in := l.Names()[0]
	if in.Source != registry.SourcePeftLora || l.Stats().Conversions != 1 {
		t.Fatalf("%+v %+v", in, l.Stats())
	}
	a := acquire(t, l, "lora")
	if a.Semantics != adapter.Delta || a.DefaultAlpha != 1 || a.NNZ() == 0 || a.ModelFingerprint != m.Fingerprint() {
		t.Fatalf("converted LoRA: %v alpha %v nnz %d", a.Semantics, a.DefaultAlpha, a.NNZ())
	}
	for _, tt := range a.Tensors {
		e := tt.NumElements()
		if want := mask.Count(e, 0.05); tt.NNZ() != want {
			t.Fatalf("tensor %s: nnz %d of %d at density 0.05", tt.Name, tt.NNZ(), e)
		}
	}
	l.Release(a)

	// Same cache, another density: another conversion; same density: none.
	l2 := newLibrary(t, registry.Options{Model: m, CacheDir: cache, LoraDensity: 0.05})
	register(t, l2, "lora", pefttest.Path("lora"))
	l3 := newLibrary(t, registry.Options{Model: m, CacheDir: cache, LoraDensity: 0.1})
	register(t, l3, "lora", pefttest.Path("lora"))
	if l2.Stats().Conversions != 0 || l3.Stats().Conversions != 1 || l2.Names()[0].File != in.File || l3.Names()[0].File == in.File {
		t.Fatalf("cache: %+v %+v", l2.Names(), l3.Names())
	}
}

// TestRegisterDir registers a directory mixing good and bad entries: the
// good ones are registered, the bad ones reported together.
func TestRegisterDir(t *testing.T) {
	m := pefttest.Open(t, "base")
	dir := t.TempDir()
	// Two good .shira files (converted from the fixtures), a corrupt one
	// (registered: files are read by Acquire), one with a bad name, a
	// dangling link, a directory named .shira, a hidden file, an
	// unrelated file, a plain subdirectory, a PEFT SHiRA checkpoint and a
	// LoRA one (refused: LoraDensity is 0).
	for _, n := range []string{"shira_a", "shira_b"} {
		ck, err := peft.Open(pefttest.Path(n))
		if err != nil {
			t.Fatal(err)
		}
		a, _, err := peft.ConvertShira(ck, m, peft.ConvertOptions{Name: n})
		if err != nil {
			t.Fatal(err)
		}
		if err := adapter.Write(filepath.Join(dir, "good-"+n+".shira"), a); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, dir, "corrupt.shira", []byte("garbage"))
	writeFile(t, dir, "bad@name.shira", []byte("garbage"))
	writeFile(t, dir, ".hidden.shira", []byte("garbage"))
	writeFile(t, dir, "notes.txt", []byte("not an adapter"))
	if err := os.Symlink(filepath.Join(dir, "nowhere"), filepath.Join(dir, "dangling.shira")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "dir.shira"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "plain"), 0o755); err != nil {
		t.Fatal(err)
	}
	copyCheckpoint(t, "shira_a", dir, "peft-a")
	copyCheckpoint(t, "lora", dir, "peft-lora")

	l := newLibrary(t, registry.Options{Model: m})
	names, err := l.RegisterDir(t.Context(), dir)
	want := []string{"corrupt", "good-shira_a", "good-shira_b", "peft-a"}
	if !slices.Equal(names, want) {
		t.Fatalf("registered %q, want %q", names, want)
	}
	if err == nil {
		t.Fatal("no error for the bad entries")
	}
	for _, target := range []error{registry.ErrInvalidName, registry.ErrInvalidAdapter, fs.ErrNotExist} {
		if !errors.Is(err, target) {
			t.Errorf("error does not wrap %v: %v", target, err)
		}
	}
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != 4 {
		t.Fatalf("want 4 joined errors (bad name, dangling link, dir.shira, LoRA): %v", err)
	}
	for _, bad := range []string{"bad@name.shira", "dangling.shira", "dir.shira", "peft-lora"} {
		if !strings.Contains(err.Error(), filepath.Join(dir, bad)) {
			t.Errorf("error does not name %s: %v", bad, err)
		}
	}
	var got []string
	for _, in := range l.Names() {
		got = append(got, in.Name+":"+string(in.Source))
	}
	if w := []string{"corrupt:shira", "good-shira_a:shira", "good-shira_b:shira", "peft-a:peft-shira"}; !slices.Equal(got, w) {
		t.Fatalf("Names: %q, want %q", got, w)
	}
	for _, n := range want[1:] {
		touch(t, l, n)
	}
	if _, err := l.Acquire(t.Context(), "corrupt"); !errors.Is(err, registry.ErrInvalidAdapter) {
		t.Fatalf("corrupt: %v", err)
	}

	// Again: everything exists already.
	names, err = l.RegisterDir(t.Context(), dir)
	if len(names) != 0 || !errors.Is(err, registry.ErrExists) {
		t.Fatalf("second RegisterDir: %q, %v", names, err)
	}
	if _, err := l.RegisterDir(t.Context(), filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing directory: %v", err)
	}
}
