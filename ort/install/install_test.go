package install

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/internal/ortcache"
)

// entry is one member of a test tarball.
type entry struct {
	name string
	data []byte
	typ  byte // tar.TypeReg when 0
	link string
}

// tgz builds a gzipped tar archive of entries.
func tgz(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o755, Typeflag: e.typ, Linkname: e.link}
		if e.typ == 0 {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sri512(b []byte) string {
	s := sha512.Sum512(b)
	return "sha512-" + base64.StdEncoding.EncodeToString(s[:])
}

var (
	libX64   = []byte("\x7fELF fake x64 onnxruntime")
	libArm64 = []byte("\x7fELF fake arm64 onnxruntime")
)

// packageTgz is an onnxruntime-node-like tarball with both libraries.
func packageTgz(t *testing.T) []byte {
	return tgz(t,
		entry{name: "package/package.json", data: []byte(`{"name":"onnxruntime-node"}`)},
		entry{name: "package/bin/napi-v6/linux/x64/", typ: tar.TypeDir},
		entry{name: "package/bin/napi-v6/linux/x64/libonnxruntime.so.1", data: libX64},
		entry{name: "package/bin/napi-v6/linux/arm64/libonnxruntime.so.1", data: libArm64},
		entry{name: "package/bin/napi-v6/darwin/arm64/libonnxruntime.1.24.1.dylib", data: []byte("mach-o")},
	)
}

// registry is a fake npm registry serving one version of onnxruntime-node.
type registry struct {
	*httptest.Server
	version   string
	tarball   []byte
	integrity string // published dist.integrity
	meta      atomic.Int32
	downloads atomic.Int32
	// hooks, when set, replace the default handlers.
	metaHandler    http.HandlerFunc
	tarballHandler http.HandlerFunc
}

func newRegistry(t *testing.T, tarball []byte) *registry {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the library is only installed on linux")
	}
	r := &registry{version: DefaultVersion, tarball: tarball, integrity: sri512(tarball)}
	mux := http.NewServeMux()
	mux.HandleFunc("/onnxruntime-node/{version}", func(w http.ResponseWriter, req *http.Request) {
		r.meta.Add(1)
		if r.metaHandler != nil {
			r.metaHandler(w, req)
			return
		}
		if req.PathValue("version") != r.version {
			http.NotFound(w, req)
			return
		}
		doc := map[string]any{"name": "onnxruntime-node", "version": r.version, "dist": map[string]any{
			"tarball":   r.URL + "/onnxruntime-node/-/onnxruntime-node-" + r.version + ".tgz",
			"integrity": r.integrity,
			"shasum":    "0000000000000000000000000000000000000000",
		}}
		json.NewEncoder(w).Encode(doc)
	})
	mux.HandleFunc("/onnxruntime-node/-/{file}", func(w http.ResponseWriter, req *http.Request) {
		r.downloads.Add(1)
		if r.tarballHandler != nil {
			r.tarballHandler(w, req)
			return
		}
		w.Write(r.tarball)
	})
	r.Server = httptest.NewServer(mux)
	t.Cleanup(r.Close)
	return r
}

// files lists the regular files under dir.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// assertEmpty fails unless dir holds nothing at all (no file, no directory).
func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Errorf("cache not left as it was: %v", files(t, dir))
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("entries in %s: %v", dir, names)
	}
}

func TestLibraryDownloadsThenCaches(t *testing.T) {
	reg := newRegistry(t, packageTgz(t))
	cache := t.TempDir()
	var log bytes.Buffer
	o := Options{GOARCH: "amd64", CacheDir: cache, Registry: reg.URL + "/", Log: &log}
	res, err := Library(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	want, err := CachePath(cache, DefaultVersion, "linux", "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if want != filepath.Join(cache, "shira-ort", "onnxruntime", "1.24.1", "linux-x64", "libonnxruntime.so.1") {
		t.Fatalf("CachePath = %s", want)
	}
	if res.Path != want || res.Version != DefaultVersion || !res.Downloaded {
		t.Fatalf("result %+v, want path %s, downloaded", res, want)
	}
	got, err := os.ReadFile(res.Path)
	if err != nil || !bytes.Equal(got, libX64) {
		t.Fatalf("library content %q, %v", got, err)
	}
	if st, _ := os.Stat(res.Path); st.Mode().Perm() != 0o666&^umask() {
		t.Errorf("mode %v, want what os.Create gives (0666 less the umask)", st.Mode())
	}
	if f := files(t, cache); len(f) != 1 {
		t.Errorf("cache holds %v, want just the library", f)
	}
	for _, s := range []string{"registry: " + reg.URL, "downloading " + reg.URL + "/onnxruntime-node/-/onnxruntime-node-1.24.1.tgz", "integrity: sha512 matches"} {
		if !strings.Contains(log.String(), s) {
			t.Errorf("log does not mention %q:\n%s", s, log.String())
		}
	}
	if reg.meta.Load() != 1 || reg.downloads.Load() != 1 {
		t.Fatalf("requests: %d metadata, %d tarball; want 1 and 1", reg.meta.Load(), reg.downloads.Load())
	}

	log.Reset()
	res2, err := Library(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res2.Downloaded || res2.Path != want {
		t.Fatalf("second call: %+v, want the cached %s", res2, want)
	}
	if reg.meta.Load() != 1 || reg.downloads.Load() != 1 {
		t.Fatalf("second call made requests: %d metadata, %d tarball", reg.meta.Load(), reg.downloads.Load())
	}
	if log.Len() != 0 {
		t.Errorf("second call logged %q", log.String())
	}
}

func TestLibraryArm64(t *testing.T) {
	reg := newRegistry(t, packageTgz(t))
	cache := t.TempDir()
	for _, arch := range []string{"arm64", "aarch64"} {
		res, err := Library(context.Background(), Options{GOARCH: arch, CacheDir: cache, Registry: reg.URL})
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(filepath.Dir(res.Path)) != "linux-arm64" {
			t.Errorf("%s: path %s", arch, res.Path)
		}
		if got, _ := os.ReadFile(res.Path); !bytes.Equal(got, libArm64) {
			t.Errorf("%s: installed %q, want the arm64 library", arch, got)
		}
	}
	if reg.downloads.Load() != 1 {
		t.Errorf("%d downloads, want 1 (aarch64 is arm64's cache entry)", reg.downloads.Load())
	}
}

func TestLibraryIntegrityMismatch(t *testing.T) {
	reg := newRegistry(t, packageTgz(t))
	reg.integrity = sri512([]byte("something else"))
	cache := t.TempDir()
	_, err := Library(context.Background(), Options{GOARCH: "amd64", CacheDir: cache, Registry: reg.URL})
	if !errors.Is(err, ErrIntegrity) {
		t.Fatalf("err = %v, want ErrIntegrity", err)
	}
	for _, s := range []string{"install: integrity check failed", reg.integrity, sri512(reg.tarball)} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
	assertEmpty(t, cache)

	// An explicit Integrity overrides the registry's: a wrong one fails,
	// the right one installs.
	sum := sha256.Sum256([]byte("other"))
	_, err = Library(context.Background(), Options{GOARCH: "amd64", CacheDir: cache, Registry: reg.URL,
		Integrity: "sha256-" + base64.StdEncoding.EncodeToString(sum[:])})
	if !errors.Is(err, ErrIntegrity) || !strings.Contains(err.Error(), "sha256-") {
		t.Fatalf("err = %v, want ErrIntegrity on sha256", err)
	}
	assertEmpty(t, cache)
	if _, err := Library(context.Background(), Options{GOARCH: "amd64", CacheDir: cache, Registry: reg.URL, Integrity: sri512(reg.tarball)}); err != nil {
		t.Fatal(err)
	}
}

func TestLibraryMissingMember(t *testing.T) {
	tarball := tgz(t, entry{name: "package/bin/napi-v6/linux/x64/libonnxruntime.so.1", data: libX64})
	reg := newRegistry(t, tarball)
	cache := t.TempDir()
	_, err := Library(context.Background(), Options{GOARCH: "arm64", CacheDir: cache, Registry: reg.URL})
	if err == nil || !strings.Contains(err.Error(), "has no package/bin/napi-v*/linux/arm64/libonnxruntime.so.1") {
		t.Fatalf("err = %v, want a missing member", err)
	}
	assertEmpty(t, cache)
}

func TestLibraryNonRegularMember(t *testing.T) {
	tarball := tgz(t, entry{name: "package/bin/napi-v6/linux/x64/libonnxruntime.so.1", typ: tar.TypeSymlink, link: "/etc/passwd"})
	reg := newRegistry(t, tarball)
	cache := t.TempDir()
	_, err := Library(context.Background(), Options{GOARCH: "amd64", CacheDir: cache, Registry: reg.URL})
	if err == nil || !strings.Contains(err.Error(), "symbolic link, not a regular file") {
		t.Fatalf("err = %v, want a refused symlink", err)
	}
	assertEmpty(t, cache)
}

func TestLibraryBadGzip(t *testing.T) {
	garbage := []byte("this is not a gzip stream at all")
	reg := newRegistry(t, garbage)
	cache := t.TempDir()
	_, err := Library(context.Background(), Options{GOARCH: "amd64", CacheDir: cache, Registry: reg.URL})
	if err == nil || errors.Is(err, ErrIntegrity) || !strings.Contains(err.Error(), "not a gzip stream") {
		t.Fatalf("err = %v, want a gzip error", err)
	}
	assertEmpty(t, cache)

	// A corrupt download (the published hash is of the real tarball) is
	// reported as an integrity failure.
	good := packageTgz(t)
	corrupt := append([]byte(nil), good...)
	corrupt[len(corrupt)/2] ^= 0xff
	reg.tarball, reg.integrity = corrupt, sri512(good)
	_, err = Library(context.Background(), Options{GOARCH: "amd64", CacheDir: cache, Registry: reg.URL})
	if !errors.Is(err, ErrIntegrity) {
		t.Fatalf("err = %v, want ErrIntegrity", err)
	}
	assertEmpty(t, cache)

	// Truncated: a valid prefix with a matching hash still fails.
	reg.tarball = good[:len(good)-20]
	reg.integrity = sri512(reg.tarball)
	_, err = Library(context.Background(), Options{GOARCH: "amd64", CacheDir: cache, Registry: reg.URL})
	if err == nil || errors.Is(err, ErrIntegrity) || !strings.Contains(err.Error(), "is not a valid onnxruntime-node tarball") {
		t.Fatalf("err = %v, want a truncated tarball", err)
	}
	assertEmpty(t, cache)
}

func TestLibraryHTTPErrors(t *testing.T) {
	reg := newRegistry(t, packageTgz(t))
	cache := t.TempDir()
	_, err := Library(context.Background(), Options{Version: "9.9.9", GOARCH: "amd64", CacheDir: cache, Registry: reg.URL})
	var he *HTTPError
	if !errors.As(err, &he) || he.StatusCode != 404 || !strings.Contains(err.Error(), "onnxruntime-node@9.9.9") || !strings.Contains(err.Error(), "404") {
		t.Fatalf("err = %v, want a 404 naming the version", err)
	}
	reg.tarballHandler = func(w http.ResponseWriter, r *http.Request) { http.Error(w, "gone", http.StatusGone) }
	_, err = Library(context.Background(), Options{GOARCH: "amd64", CacheDir: cache, Registry: reg.URL})
	if !errors.As(err, &he) || he.StatusCode != http.StatusGone || !strings.Contains(err.Error(), "downloading") {
		t.Fatalf("err = %v, want a 410 on the download", err)
	}
	reg.metaHandler = func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"name":"onnxruntime-node","version":"1.0.0","dist":{}}`))
	}
	_, err = Library(context.Background(), Options{GOARCH: "amd64", CacheDir: cache, Registry: reg.URL})
	if err == nil || !strings.Contains(err.Error(), `describes "onnxruntime-node"@"1.0.0"`) {
		t.Fatalf("err = %v, want a version mismatch", err)
	}
	assertEmpty(t, cache)
}

func TestLibraryOversize(t *testing.T) {
	reg := newRegistry(t, packageTgz(t))
	cache := t.TempDir()
	setLimit := func(p *int64, v int64) {
		old := *p
		*p = v
		t.Cleanup(func() { *p = old })
	}
	try := func(what string) {
		t.Helper()
		_, err := Library(context.Background(), Options{GOARCH: "amd64", CacheDir: cache, Registry: reg.URL})
		if err == nil || !strings.Contains(err.Error(), what) {
			t.Fatalf("err = %v, want %q", err, what)
		}
		assertEmpty(t, cache)
	}

	setLimit(&maxLibraryBytes, int64(len(libX64))-1)
	try("libonnxruntime.so.1 is 25 bytes (want 1 to 24)")
	maxLibraryBytes = 1 << 20

	setLimit(&maxTarballBytes, int64(len(reg.tarball))-1)
	try("more than the") // Content-Length
	reg.tarballHandler = func(w http.ResponseWriter, r *http.Request) {
		w.Write(reg.tarball[:10])
		w.(http.Flusher).Flush() // chunked: no Content-Length
		w.Write(reg.tarball[10:])
	}
	try("more than the") // while streaming
	maxTarballBytes = 1 << 30

	setLimit(&maxUnpackedBytes, 1024)
	try("unpacked archive exceeds")
	maxUnpackedBytes = 1 << 30

	setLimit(&maxMetadataBytes, 10)
	try("metadata")
}

func TestLibraryContextCancelled(t *testing.T) {
	reg := newRegistry(t, packageTgz(t))
	cache := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Library(ctx, Options{GOARCH: "amd64", CacheDir: cache, Registry: reg.URL})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}

	// Cancelled in the middle of the download, after the library member
	// was written to its temporary file.
	wrote := make(chan struct{})
	reg.tarballHandler = func(w http.ResponseWriter, r *http.Request) {
		w.Write(reg.tarball[:len(reg.tarball)-8])
		w.(http.Flusher).Flush()
		close(wrote)
		<-r.Context().Done()
	}
	ctx, cancel = context.WithCancel(context.Background())
	go func() {
		<-wrote
		time.Sleep(50 * time.Millisecond)
		cancel()
	}()
	_, err = Library(ctx, Options{GOARCH: "amd64", CacheDir: cache, Registry: reg.URL})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	assertEmpty(t, cache)
}

func TestLibraryOfflineTarball(t *testing.T) {
	tarball := packageTgz(t)
	file := filepath.Join(t.TempDir(), "onnxruntime-node-1.24.1.tgz")
	if err := os.WriteFile(file, tarball, 0o644); err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	// With Integrity no registry is needed at all.
	t.Setenv(RegistryEnv, "")
	t.Setenv("npm_config_registry", "")
	t.Setenv("PATH", t.TempDir())
	res, err := Library(context.Background(), Options{GOARCH: "amd64", CacheDir: cache, Tarball: file, Integrity: "sha1-AAAA " + sri512(tarball)})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(res.Path); !res.Downloaded || !bytes.Equal(got, libX64) {
		t.Fatalf("%+v: %q", res, got)
	}

	// Without Integrity the registry's published one is used, and nothing
	// but the metadata is fetched.
	reg := newRegistry(t, tarball)
	cache2 := t.TempDir()
	if _, err := Library(context.Background(), Options{GOARCH: "arm64", CacheDir: cache2, Tarball: file, Registry: reg.URL}); err != nil {
		t.Fatal(err)
	}
	if reg.meta.Load() != 1 || reg.downloads.Load() != 0 {
		t.Fatalf("requests: %d metadata, %d tarball; want 1 and 0", reg.meta.Load(), reg.downloads.Load())
	}
	reg.integrity = sri512([]byte("x"))
	cache3 := t.TempDir()
	if _, err := Library(context.Background(), Options{GOARCH: "arm64", CacheDir: cache3, Tarball: file, Registry: reg.URL}); !errors.Is(err, ErrIntegrity) {
		t.Fatalf("err = %v, want ErrIntegrity", err)
	}
	assertEmpty(t, cache3)
	if _, err := Library(context.Background(), Options{GOARCH: "arm64", CacheDir: cache3, Tarball: file + ".missing", Integrity: sri512(tarball)}); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want ErrNotExist", err)
	}
	assertEmpty(t, cache3)
	// No registry, no npm, no Integrity: a clear error.
	if _, err := Library(context.Background(), Options{GOARCH: "arm64", CacheDir: cache3, Tarball: file}); !errors.Is(err, ErrNoRegistry) || !strings.Contains(err.Error(), "--registry") {
		t.Fatalf("err = %v, want ErrNoRegistry", err)
	}
	assertEmpty(t, cache3)
}

func TestLibraryBadInput(t *testing.T) {
	cache := t.TempDir()
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{GOARCH: "riscv64"}, "unsupported platform"},
		{Options{GOARCH: "amd64", Version: "../../etc"}, "invalid version"},
		{Options{GOARCH: "amd64", Integrity: "sha1-2jmj7l5rSw0yVb/vlWAYkK/YBwk="}, "no sha512, sha384 or sha256"},
		{Options{GOARCH: "amd64", Integrity: "sha512-!!!"}, "not base64"},
		{Options{GOARCH: "amd64", Integrity: "sha256-AAAA"}, "has 3 bytes, want 32"},
		{Options{GOARCH: "amd64", Registry: "ftp://example.invalid/"}, "not an http(s) base URL"},
	} {
		c.o.CacheDir = cache
		_, err := Library(context.Background(), c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "install: ") {
			t.Errorf("%+v: err = %v, want %q", c.o, err, c.want)
		}
	}
	assertEmpty(t, cache)
}

func TestConstantsMatchOrtcache(t *testing.T) {
	if DefaultVersion != ortcache.DefaultVersion || Package != ortcache.Package || LibraryName != ortcache.LibraryName {
		t.Fatalf("install (%s %s %s) and internal/ortcache (%s %s %s) disagree", DefaultVersion, Package, LibraryName,
			ortcache.DefaultVersion, ortcache.Package, ortcache.LibraryName)
	}
}

func TestCachePath(t *testing.T) {
	xdg := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", xdg)
	p, err := CachePath("", "", "linux", "arm64")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(xdg, "shira-ort", "onnxruntime", DefaultVersion, "linux-arm64", LibraryName); p != want {
		t.Fatalf("CachePath = %s, want %s", p, want)
	}
	for _, c := range [][2]string{{"darwin", "arm64"}, {"windows", "amd64"}, {"linux", "386"}} {
		if _, err := CachePath("", "", c[0], c[1]); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), c[0]+"/"+c[1]) {
			t.Errorf("%s/%s: err = %v, want ErrUnsupported", c[0], c[1], err)
		}
	}
}

func TestParseIntegrity(t *testing.T) {
	data := []byte("abc")
	s256 := sha256.Sum256(data)
	s384 := sha512.Sum384(data)
	tok256 := "sha256-" + base64.StdEncoding.EncodeToString(s256[:])
	tok384 := "sha384-" + base64.StdEncoding.EncodeToString(s384[:]) + "?opt"
	i, err := parseIntegrity("sha1-qZk+NkcGgWq6PiVxeFDCbJzQ2J0= " + tok256 + " " + tok384)
	if err != nil {
		t.Fatal(err)
	}
	if i.alg != "sha384" || !i.matches(s384[:]) || i.matches(s256[:]) {
		t.Fatalf("picked %s", i.alg)
	}
	i, err = parseIntegrity(sri512(data) + " " + tok256)
	if err != nil || i.alg != "sha512" {
		t.Fatalf("%v %v", i, err)
	}
	for _, bad := range []string{"", "sha512", "md5-AAAA", "sha512-AAAA"} {
		if _, err := parseIntegrity(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestRegistryFromEnv(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no npm
	t.Setenv("npm_config_registry", "")
	t.Setenv(RegistryEnv, "http://registry.example.invalid/npm/")
	if r, err := Registry(context.Background()); err != nil || r != "http://registry.example.invalid/npm/" {
		t.Fatalf("Registry() = %q, %v", r, err)
	}
	t.Setenv(RegistryEnv, "")
	t.Setenv("npm_config_registry", "https://lower.example.invalid")
	if r, err := Registry(context.Background()); err != nil || r != "https://lower.example.invalid" {
		t.Fatalf("Registry() = %q, %v", r, err)
	}
	t.Setenv("npm_config_registry", "not a url")
	if _, err := Registry(context.Background()); err == nil || !strings.Contains(err.Error(), "npm_config_registry") {
		t.Fatalf("err = %v, want a bad URL from npm_config_registry", err)
	}
	t.Setenv("npm_config_registry", "")
	_, err := Registry(context.Background())
	if !errors.Is(err, ErrNoRegistry) || !strings.Contains(err.Error(), "--registry") {
		t.Fatalf("err = %v, want ErrNoRegistry naming --registry", err)
	}

	// Library resolves the registry the same way when Options.Registry is
	// empty.
	reg := newRegistry(t, packageTgz(t))
	t.Setenv(RegistryEnv, reg.URL)
	if _, err := Library(context.Background(), Options{GOARCH: "amd64", CacheDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	if reg.downloads.Load() != 1 {
		t.Fatal("the registry from the environment was not used")
	}
}

func TestRegistryFromNpm(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("uses a shell script as npm")
	}
	bin := t.TempDir()
	script := "#!/bin/sh\n[ \"$*\" = \"config get registry\" ] || exit 3\necho http://npm.example.invalid/\n"
	if err := os.WriteFile(filepath.Join(bin, "npm"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin)
	t.Setenv(RegistryEnv, "")
	t.Setenv("npm_config_registry", "")
	if r, err := Registry(context.Background()); err != nil || r != "http://npm.example.invalid/" {
		t.Fatalf("Registry() = %q, %v", r, err)
	}
	if err := os.WriteFile(filepath.Join(bin, "npm"), []byte("#!/bin/sh\necho undefined\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Registry(context.Background()); !errors.Is(err, ErrNoRegistry) {
		t.Fatalf("err = %v, want ErrNoRegistry", err)
	}
	if err := os.WriteFile(filepath.Join(bin, "npm"), []byte("#!/bin/sh\necho broken >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Registry(context.Background()); !errors.Is(err, ErrNoRegistry) || !strings.Contains(err.Error(), "broken") {
		t.Fatalf("err = %v, want ErrNoRegistry with npm's message", err)
	}
}

// umask returns the process's umask (set and restored at once).
func umask() os.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return os.FileMode(m)
}
