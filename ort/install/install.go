// Package install provides the ONNX Runtime shared library that package ort
// loads: it fetches the npm package onnxruntime-node from an npm registry,
// checks the tarball against the integrity hash the registry publishes, and
// extracts the one file needed into the user's cache directory:
//
//	<cache>/shira-ort/onnxruntime/<version>/linux-<x64|arm64>/libonnxruntime.so.1
//
// where ort.Init finds it without configuration. Nothing is downloaded when
// the file is already there. The package is pure Go (no cgo) and uses only
// the standard library, so `shira-ort setup` and programs embedding Library
// need neither npm nor a checkout of shira-ort; npm, when present, is only
// asked which registry to use.
//
// Only linux/amd64 and linux/arm64 have a prebuilt library in the package.
package install

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/shira-ort/shira-ort/internal/atomicfile"
	"github.com/shira-ort/shira-ort/internal/ortcache"
)

// DefaultVersion is the onnxruntime-node (and ONNX Runtime) release
// installed when Options.Version is empty: the one whose C API header
// github.com/yalue/onnxruntime_go v1.27.0 was built against. It equals
// ort.LibraryVersion.
const DefaultVersion = "1.24.1"

// Package is the npm package the library is taken from.
const Package = "onnxruntime-node"

// LibraryName is the file name of the installed library (its soname).
const LibraryName = "libonnxruntime.so.1"

// ErrIntegrity is wrapped by Library's error when the tarball's hash does
// not match the expected integrity. Nothing is installed then.
var ErrIntegrity = errors.New("install: integrity check failed")

// ErrUnsupported is wrapped by the errors of CachePath and Library for a
// platform the npm package has no prebuilt library for (anything but
// linux/amd64 and linux/arm64).
var ErrUnsupported = ortcache.ErrUnsupported

// ErrNoRegistry is wrapped by Registry's (and Library's) error when no npm
// registry is configured and none was given.
var ErrNoRegistry = errors.New("install: no npm registry configured")

// Size limits, so that a broken or hostile server cannot exhaust memory or
// disk. Variables (not constants) so that tests can lower them.
var (
	// maxMetadataBytes bounds the package metadata document.
	maxMetadataBytes int64 = 4 << 20
	// maxTarballBytes bounds the compressed tarball (onnxruntime-node
	// 1.24.1 is well under 200 MiB).
	maxTarballBytes int64 = 1 << 30
	// maxUnpackedBytes bounds the decompressed archive (a gzip bomb is
	// refused once this much has been read).
	maxUnpackedBytes int64 = 4 << 30
	// maxLibraryBytes bounds the extracted library (35 MiB for 1.24.1
	// linux-x64).
	maxLibraryBytes int64 = 512 << 20
)

// Options configures Library. The zero value installs DefaultVersion for
// the running architecture into the user's cache directory, from the
// registry Registry reports.
type Options struct {
	// Version is the onnxruntime-node version (default DefaultVersion).
	Version string
	// GOARCH is the architecture to install for, as Go names it (amd64
	// or arm64; npm's x64 and the kernel's x86_64 and aarch64 are
	// accepted too). Default: runtime.GOARCH. Another architecture's
	// library is cached beside the host's (e.g. for tests under qemu).
	GOARCH string
	// CacheDir is the cache root (default os.UserCacheDir(), i.e.
	// $XDG_CACHE_HOME or ~/.cache). The library goes to CachePath's
	// location under it.
	CacheDir string
	// Registry is the npm registry's base URL (default: Registry's answer).
	Registry string
	// Tarball, when set, is an already downloaded
	// onnxruntime-node-<version>.tgz to install from instead of
	// downloading one (offline installs). It is checked against Integrity,
	// or when that is empty against the registry's published integrity.
	Tarball string
	// Integrity is the expected Subresource Integrity string of the
	// tarball, e.g. "sha512-<base64>" (several space-separated hashes are
	// allowed; the strongest of sha512, sha384 and sha256 is checked).
	// Empty: the registry's dist.integrity for Version.
	Integrity string
	// HTTPClient makes the requests (default http.DefaultClient, which
	// honours the HTTPS_PROXY and NO_PROXY environment variables).
	HTTPClient *http.Client
	// Log, when set, receives a line per step of a download (registry,
	// tarball URL and size, verified hash); nothing when the library is
	// cached. The outcome is in Result.
	Log io.Writer
}

// Result describes the installed library.
type Result struct {
	// Path is the library file (absolute when the cache directory is).
	Path string
	// Version is the onnxruntime-node version installed.
	Version string
	// Downloaded is true when the library was extracted by this call (from
	// the registry or Options.Tarball), false when it was already cached.
	Downloaded bool
}

// CachePath returns where Library installs the library for version on
// goos/goarch:
//
//	<cacheDir>/shira-ort/onnxruntime/<version>/<goos>-<x64|arm64>/libonnxruntime.so.1
//
// cacheDir "" means os.UserCacheDir() and version "" means DefaultVersion;
// goarch may be amd64 or arm64 (or x64, x86_64, aarch64). Only linux on
// amd64 and arm64 is supported; other platforms get an error wrapping
// ErrUnsupported.
func CachePath(cacheDir, version, goos, goarch string) (string, error) {
	return ortcache.Path(cacheDir, version, goos, goarch)
}

// Library makes sure the ONNX Runtime shared library of onnxruntime-node
// o.Version is in the cache and returns where it is.
//
// When the file already exists (and is not empty) nothing is read or
// downloaded (malformed options are still refused). Otherwise Library fetches the package metadata
// <registry>/onnxruntime-node/<version>, downloads dist.tarball (or reads
// o.Tarball) and, in one streaming pass, hashes the tarball while
// extracting the member package/bin/napi-v*/linux/<x64|arm64>/libonnxruntime.so.1
// into a temporary file beside the destination. Only when the whole
// tarball has been read and its hash matches the expected integrity is the
// file synced and renamed into place (mode 0644); on any error the cache is
// left as it was. A mismatch is an error wrapping ErrIntegrity.
//
// ctx bounds the whole call (registry lookup, requests and download).
func Library(ctx context.Context, o Options) (Result, error) {
	version := o.Version
	if version == "" {
		version = DefaultVersion
	}
	goarch := o.GOARCH
	if goarch == "" {
		goarch = runtime.GOARCH
	}
	dest, err := CachePath(o.CacheDir, version, runtime.GOOS, goarch)
	if err != nil {
		return Result{}, err
	}
	arch, _ := ortcache.NPMArch(runtime.GOOS, goarch) // checked by CachePath
	res := Result{Path: dest, Version: version}
	var want *integrity
	if o.Integrity != "" {
		if want, err = parseIntegrity(o.Integrity); err != nil {
			return Result{}, err
		}
	}
	if o.Registry != "" {
		if _, err := checkRegistry(o.Registry); err != nil {
			return Result{}, err
		}
	}
	if st, err := os.Stat(dest); err == nil && st.Mode().IsRegular() && st.Size() > 0 {
		return res, nil
	}

	i := &installer{o: o, version: version, arch: arch, dest: dest, client: o.HTTPClient}
	if i.client == nil {
		i.client = http.DefaultClient
	}
	var (
		src     io.ReadCloser
		srcName string
		srcSize int64 = -1
	)
	if o.Tarball != "" {
		f, err := os.Open(o.Tarball)
		if err != nil {
			return Result{}, fmt.Errorf("install: opening the tarball: %w", err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return Result{}, fmt.Errorf("install: %w", err)
		}
		if !st.Mode().IsRegular() {
			return Result{}, fmt.Errorf("install: tarball %s is not a regular file", o.Tarball)
		}
		src, srcName, srcSize = f, o.Tarball, st.Size()
		logf(o.Log, "reading %s%s", srcName, sizeNote(srcSize))
		if want == nil {
			meta, err := i.metadata(ctx)
			if err != nil {
				return Result{}, err
			}
			if want, err = meta.integrity(); err != nil {
				return Result{}, err
			}
		}
	} else {
		meta, err := i.metadata(ctx)
		if err != nil {
			return Result{}, err
		}
		if want == nil {
			if want, err = meta.integrity(); err != nil {
				return Result{}, err
			}
		}
		resp, err := i.get(ctx, meta.tarball, "*/*")
		if err != nil {
			return Result{}, fmt.Errorf("install: downloading %s@%s: %w", Package, version, err)
		}
		defer resp.Body.Close()
		src, srcName, srcSize = resp.Body, redact(meta.tarball), resp.ContentLength
		logf(o.Log, "downloading %s%s", srcName, sizeNote(srcSize))
	}
	if srcSize > maxTarballBytes {
		return Result{}, fmt.Errorf("install: %s is %d bytes, more than the %d allowed for an %s tarball", srcName, srcSize, maxTarballBytes, Package)
	}
	if err := i.extract(ctx, src, srcName, want); err != nil {
		return Result{}, err
	}
	res.Downloaded = true
	return res, nil
}

// installer holds one Library call's state.
type installer struct {
	o       Options
	version string
	arch    string
	dest    string
	client  *http.Client
}

// packument is the part of the registry's version document Library reads.
type packument struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Dist    struct {
		Tarball   string `json:"tarball"`
		Integrity string `json:"integrity"`
	} `json:"dist"`

	url     string // where it was fetched
	tarball string // Dist.Tarball resolved against url
}

// integrity returns the published integrity, parsed.
func (p *packument) integrity() (*integrity, error) {
	if p.Dist.Integrity == "" {
		return nil, fmt.Errorf("install: %s publishes no dist.integrity for %s@%s; pass the expected integrity (--integrity, Options.Integrity)", redact(p.url), Package, p.Version)
	}
	want, err := parseIntegrity(p.Dist.Integrity)
	if err != nil {
		return nil, fmt.Errorf("install: the registry's dist.integrity: %w", err)
	}
	return want, nil
}

// metadata fetches and checks <registry>/onnxruntime-node/<version>.
func (i *installer) metadata(ctx context.Context) (*packument, error) {
	reg := i.o.Registry
	if reg == "" {
		var err error
		if reg, err = Registry(ctx); err != nil {
			return nil, err
		}
	}
	base, err := checkRegistry(reg)
	if err != nil {
		return nil, err
	}
	logf(i.o.Log, "registry: %s", redact(reg))
	u := base.JoinPath(Package, i.version)
	resp, err := i.get(ctx, u.String(), "application/json")
	if err != nil {
		return nil, fmt.Errorf("install: fetching the metadata of %s@%s: %w", Package, i.version, err)
	}
	defer resp.Body.Close()
	if resp.ContentLength > maxMetadataBytes {
		return nil, fmt.Errorf("install: metadata %s is %d bytes, more than the %d allowed", redact(u.String()), resp.ContentLength, maxMetadataBytes)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMetadataBytes+1))
	if err != nil {
		return nil, fmt.Errorf("install: reading %s: %w", redact(u.String()), err)
	}
	if int64(len(body)) > maxMetadataBytes {
		return nil, fmt.Errorf("install: metadata %s is more than the %d bytes allowed", redact(u.String()), maxMetadataBytes)
	}
	p := &packument{url: u.String()}
	if err := json.Unmarshal(body, p); err != nil {
		return nil, fmt.Errorf("install: %s is not %s@%s's metadata: %w", redact(u.String()), Package, i.version, err)
	}
	if p.Name != Package || p.Version != i.version {
		return nil, fmt.Errorf("install: %s describes %q@%q, not %s@%s", redact(u.String()), p.Name, p.Version, Package, i.version)
	}
	if p.Dist.Tarball == "" {
		return nil, fmt.Errorf("install: %s has no dist.tarball", redact(u.String()))
	}
	t, err := u.Parse(p.Dist.Tarball)
	if err != nil || (t.Scheme != "https" && t.Scheme != "http") || t.Host == "" {
		return nil, fmt.Errorf("install: %s: dist.tarball %q is not an http(s) URL", redact(u.String()), p.Dist.Tarball)
	}
	p.tarball = t.String()
	return p, nil
}

// HTTPError is the error (wrapped) for a request answered with a status
// other than 200 OK.
type HTTPError struct {
	// URL is the requested URL, without credentials.
	URL string
	// StatusCode is the HTTP status code, e.g. 404.
	StatusCode int
	// Status is the status line, e.g. "404 Not Found".
	Status string
}

// Error implements error.
func (e *HTTPError) Error() string { return fmt.Sprintf("GET %s: %s", e.URL, e.Status) }

// get performs a GET and refuses any status but 200.
func (i *installer) get(ctx context.Context, rawURL, accept string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", accept)
	req.Header.Set("User-Agent", "shira-ort-install")
	resp, err := i.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, &HTTPError{URL: redact(rawURL), StatusCode: resp.StatusCode, Status: resp.Status}
	}
	return resp, nil
}

// memberPattern matches the library's path in the package for arch.
func memberPattern(arch string) string {
	return "package/bin/napi-v*/linux/" + arch + "/" + LibraryName
}

// extract streams the tarball src: it hashes every byte, extracts the
// library member into a temporary file beside i.dest, and installs that
// file only when the whole stream was read and matches want.
func (i *installer) extract(ctx context.Context, src io.Reader, name string, want *integrity) (err error) {
	raw := &sourceReader{ctx: ctx, r: src, left: maxTarballBytes}
	h := want.newHash()
	hashed := io.TeeReader(raw, h)
	pattern := memberPattern(i.arch)

	var (
		tmp     *atomicfile.File
		created []string // directories made for the temporary file
		found   bool
	)
	defer func() {
		if err != nil {
			tmp.Discard()
			for k := len(created) - 1; k >= 0; k-- {
				os.Remove(created[k]) // only if still empty
			}
		}
	}()

	// parse reads the archive; its error is a format error unless raw
	// recorded a read error (which then is the cause).
	parse := func() error {
		gz, err := gzip.NewReader(hashed)
		if err != nil {
			return fmt.Errorf("not a gzip stream: %w", err)
		}
		unpacked := &limitReader{r: gz, left: maxUnpackedBytes, what: "unpacked archive"}
		tr := tar.NewReader(unpacked)
		for {
			hdr, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
			if found {
				continue
			}
			if ok, _ := path.Match(pattern, strings.TrimPrefix(hdr.Name, "./")); !ok {
				continue
			}
			if hdr.Typeflag != tar.TypeReg {
				return fmt.Errorf("%s is a %s, not a regular file", hdr.Name, typeName(hdr.Typeflag))
			}
			if hdr.Size <= 0 || hdr.Size > maxLibraryBytes {
				return fmt.Errorf("%s is %d bytes (want 1 to %d)", hdr.Name, hdr.Size, maxLibraryBytes)
			}
			if tmp == nil {
				if created, err = mkdirAll(filepath.Dir(i.dest)); err != nil {
					return &writeError{err}
				}
				if tmp, err = atomicfile.Create(i.dest); err != nil {
					return &writeError{err}
				}
			}
			w := &recordingWriter{w: tmp}
			n, err := io.Copy(w, tr)
			if w.err != nil {
				return &writeError{w.err}
			}
			if err != nil {
				return err
			}
			if n != hdr.Size {
				return fmt.Errorf("%s: read %d of %d bytes", hdr.Name, n, hdr.Size)
			}
			found = true
		}
		// Read the rest: the gzip trailer (checksum) and anything after.
		if _, err := io.Copy(io.Discard, unpacked); err != nil {
			return err
		}
		return nil
	}
	perr := parse()
	if raw.err != nil {
		return fmt.Errorf("install: reading %s: %w", name, raw.err)
	}
	var we *writeError
	if errors.As(perr, &we) {
		return fmt.Errorf("install: writing %s: %w", i.dest, we.err)
	}
	// The hash covers the stream to its very end, also after a format
	// error: a corrupt download is then reported as such.
	if _, err := io.Copy(io.Discard, hashed); err != nil || raw.err != nil {
		if raw.err == nil {
			raw.err = err
		}
		return fmt.Errorf("install: reading %s: %w", name, raw.err)
	}
	if got := h.Sum(nil); !want.matches(got) {
		if perr != nil {
			return fmt.Errorf("%w: %s has %s, want %s (and it is not a valid %s tarball: %v)", ErrIntegrity, name, want.format(got), want.text, Package, perr)
		}
		return fmt.Errorf("%w: %s has %s, want %s; nothing was installed", ErrIntegrity, name, want.format(got), want.text)
	}
	logf(i.o.Log, "integrity: %s matches", want.alg)
	if perr != nil {
		return fmt.Errorf("install: %s is not a valid %s tarball: %w", name, Package, perr)
	}
	if !found {
		return fmt.Errorf("install: %s has no %s (does %s@%s ship a linux/%s library?)", name, pattern, Package, i.version, i.arch)
	}
	if err := tmp.Commit(); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	return nil
}

// writeError marks a failure to write the cache (as opposed to a bad
// archive).
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }

// recordingWriter remembers its writer's first error, so that a failed
// copy can be told apart from a bad archive.
type recordingWriter struct {
	w   io.Writer
	err error
}

func (r *recordingWriter) Write(p []byte) (int, error) {
	n, err := r.w.Write(p)
	if err != nil && r.err == nil {
		r.err = err
	}
	return n, err
}

// mkdirAll creates dir and its missing parents and returns the ones it
// created, outermost first.
func mkdirAll(dir string) ([]string, error) {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		missing = append([]string{d}, missing...)
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return missing, nil
}

// typeName names a tar entry type for error messages.
func typeName(t byte) string {
	switch t {
	case tar.TypeSymlink:
		return "symbolic link"
	case tar.TypeLink:
		return "hard link"
	case tar.TypeDir:
		return "directory"
	case tar.TypeChar, tar.TypeBlock:
		return "device"
	case tar.TypeFifo:
		return "FIFO"
	}
	return fmt.Sprintf("tar entry of type %q", t)
}

// errTooLarge is wrapped when a stream exceeds its size limit.
var errTooLarge = errors.New("too large")

// sourceReader reads the raw tarball: it stops at the size limit and when
// ctx is done, and records the first read error other than io.EOF.
type sourceReader struct {
	ctx  context.Context
	r    io.Reader
	left int64
	err  error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if err := s.ctx.Err(); err != nil {
		s.err = err
		return 0, err
	}
	if int64(len(p)) > s.left+1 {
		p = p[:s.left+1]
	}
	n, err := s.r.Read(p)
	s.left -= int64(n)
	if s.left < 0 {
		s.err = fmt.Errorf("%w: more than the %d bytes allowed for an %s tarball", errTooLarge, maxTarballBytes, Package)
		return 0, s.err
	}
	if err != nil && err != io.EOF {
		if cerr := s.ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w (%v)", cerr, err)
		}
		s.err = err
	}
	return n, err
}

// limitReader fails once more than left bytes are read.
type limitReader struct {
	r    io.Reader
	left int64
	what string
}

func (l *limitReader) Read(p []byte) (int, error) {
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return 0, fmt.Errorf("%w: %s exceeds %d bytes", errTooLarge, l.what, maxUnpackedBytes)
	}
	return n, err
}

// checkRegistry parses a registry base URL.
func checkRegistry(reg string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(reg))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("install: registry %q is not an http(s) base URL", redact(reg))
	}
	return u, nil
}

// redact removes a password from a URL for messages.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	return u.Redacted()
}

func logf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

func sizeNote(n int64) string {
	if n < 0 {
		return ""
	}
	return fmt.Sprintf(" (%.1f MiB)", float64(n)/(1<<20))
}
