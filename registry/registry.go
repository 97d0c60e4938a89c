package registry

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/closest"
	"github.com/shira-ort/shira-ort/lora"
	"github.com/shira-ort/shira-ort/peft"
)

// Errors wrapped by the errors of this package, for errors.Is.
var (
	// ErrNotFound reports a name that is not registered.
	ErrNotFound = errors.New("registry: adapter not found")
	// ErrExists reports a Register of a name already registered (or being
	// registered).
	ErrExists = errors.New("registry: adapter already registered")
	// ErrInvalidName reports a name CheckName refuses.
	ErrInvalidName = errors.New("registry: invalid adapter name")
	// ErrInvalidAdapter reports an adapter that cannot be used with the
	// model: a path that is neither a file nor a PEFT checkpoint, a
	// malformed file (wrapping adapter.ErrInvalid or ErrUnsupported), an
	// adapter made for another model or other weights (wrapping
	// patch.ErrFingerprint, ErrUnknownTarget, ErrMismatch, ...), a
	// checkpoint that does not convert (wrapping peft's or lora's error),
	// a LoRA checkpoint when Options.LoraDensity is 0.
	ErrInvalidAdapter = errors.New("registry: invalid adapter")
	// ErrClosed reports a use of a Library after Close.
	ErrClosed = errors.New("registry: library closed")
)

// DefaultMaxOpen is the number of unused adapters kept open when
// Options.MaxOpen is 0.
const DefaultMaxOpen = 64

// Options configure a Library.
type Options struct {
	// Model is the exported model every adapter is for (required). It must
	// stay open while the Library is used.
	Model *export.Model
	// CacheDir holds the .shira files converted from PEFT checkpoints;
	// "" means os.UserCacheDir()/shira-ort/converted. It is created when
	// the first checkpoint is converted.
	CacheDir string
	// MaxOpen is the most adapters kept open (mapped) while nobody has
	// them acquired; 0 means DefaultMaxOpen.
	MaxOpen int
	// MaxOpenBytes is the most bytes of such mappings; 0 means no byte
	// bound.
	MaxOpenBytes int64
	// LoraDensity is the fraction of each weight's entries a PEFT LoRA
	// checkpoint keeps when it is converted to SHiRA (the top-k of
	// scale·B·A by magnitude, computed with ONNX Runtime: lora.ToShira),
	// in (0, 1]; 0 means LoRA checkpoints are refused.
	LoraDensity float64
	// Logger receives conversions, validation failures and evictions; nil
	// means slog.Default().
	Logger *slog.Logger
}

// Source says what a registered path held.
type Source string

// The sources of registered adapters.
const (
	SourceShira     Source = "shira"      // a .shira file
	SourcePeftShira Source = "peft-shira" // a PEFT SHiRA checkpoint directory, converted
	SourcePeftLora  Source = "peft-lora"  // a PEFT LoRA checkpoint directory, converted by top-k
)

// Info describes a registered adapter (Library.Names).
type Info struct {
	// Name is the registered name.
	Name string
	// Path is the path registered (made absolute): a .shira file or a
	// PEFT checkpoint directory.
	Path string
	// File is the .shira file opened: Path itself, or the converted file
	// in the cache directory.
	File string
	// Source says what Path holds.
	Source Source
	// Open reports whether the adapter is mapped now.
	Open bool
	// InUse is the number of Acquires not yet released.
	InUse int
	// Bytes is the size of the mapping when Open, else the file's size
	// when it was registered or last opened (what opening it would cost).
	Bytes int64
}

// Stats are a Library's gauges and counters.
type Stats struct {
	// Registered is the number of registered names.
	Registered int
	// Open is the number of adapters the library holds open, acquired or
	// not (an unregistered adapter still acquired counts until its last
	// Release); OpenBytes is the size of their mappings.
	Open      int
	OpenBytes int64
	// InUse is the number of open adapters with Acquires not yet
	// released. Open - InUse never exceeds Options.MaxOpen.
	InUse int
	// Hits counts Acquires served without opening a file: the adapter was
	// open, or another Acquire was opening it. Misses counts the opens
	// Acquires made (successful or not). Evictions counts the unused
	// adapters closed to respect MaxOpen and MaxOpenBytes. Conversions
	// counts the PEFT checkpoints converted (not found in the cache).
	// All four count since New.
	Hits, Misses, Evictions, Conversions int64
}

// Library holds the adapters registered for one model. See the package
// documentation.
type Library struct {
	model        *export.Model
	cacheDir     string
	cacheDirErr  error // why there is no default CacheDir
	maxOpen      int
	maxOpenBytes int64
	loraDensity  float64
	log          *slog.Logger
	v            *validator

	// ctx ends at Close, cancelling conversions in progress.
	ctx    context.Context
	cancel context.CancelFunc
	// busy counts the operations that use v, the model or the LoRA engine
	// outside mu; Close waits for them. Add is only called under mu
	// while the library is open.
	busy sync.WaitGroup

	engineMu sync.Mutex
	engine   *lora.Engine

	mu        sync.Mutex
	closed    bool
	entries   map[string]*entry
	pending   map[string]bool // names being registered
	inUse     map[*adapter.Adapter]*entry
	idle      *list.List // of *entry: open, not acquired; front = most recently used
	idleBytes int64
	open      int
	openBytes int64
	stats     Stats // counters only
}

// entry is one registered adapter. The fields below mu are guarded by
// Library.mu.
type entry struct {
	name   string
	path   string
	file   string
	source Source

	size    int64            // mapping size when open, else the file size last seen
	a       *adapter.Adapter // open, or nil
	users   int              // Acquires not released
	elem    *list.Element    // in Library.idle when open and users == 0
	loading *loadCall        // an open in progress
	removed bool             // unregistered, or the library closed
}

// loadCall is an open in progress: the Acquires that want the same adapter
// wait for done, then find it open or share err.
type loadCall struct {
	done chan struct{}
	err  error
}

// New returns an empty Library for o.Model.
func New(o Options) (*Library, error) {
	if o.Model == nil {
		return nil, errors.New("registry: Options.Model is nil")
	}
	if o.MaxOpen < 0 {
		return nil, fmt.Errorf("registry: Options.MaxOpen %d is negative", o.MaxOpen)
	}
	if o.MaxOpenBytes < 0 {
		return nil, fmt.Errorf("registry: Options.MaxOpenBytes %d is negative", o.MaxOpenBytes)
	}
	if d := o.LoraDensity; math.IsNaN(d) || d < 0 || d > 1 {
		return nil, fmt.Errorf("registry: Options.LoraDensity %v is not in [0, 1]", d)
	}
	l := &Library{
		model:        o.Model,
		cacheDir:     o.CacheDir,
		maxOpen:      o.MaxOpen,
		maxOpenBytes: o.MaxOpenBytes,
		loraDensity:  o.LoraDensity,
		log:          o.Logger,
		entries:      map[string]*entry{},
		pending:      map[string]bool{},
		inUse:        map[*adapter.Adapter]*entry{},
		idle:         list.New(),
	}
	if l.maxOpen == 0 {
		l.maxOpen = DefaultMaxOpen
	}
	if l.log == nil {
		l.log = slog.Default()
	}
	if l.cacheDir == "" {
		if d, err := os.UserCacheDir(); err != nil {
			l.cacheDirErr = err
		} else {
			l.cacheDir = filepath.Join(d, "shira-ort", "converted")
		}
	}
	v, err := newValidator(o.Model)
	if err != nil {
		return nil, err
	}
	l.v = v
	l.ctx, l.cancel = context.WithCancel(context.Background())
	return l, nil
}

// Register adds the adapter at path under name. path is a .shira file, a
// PEFT SHiRA checkpoint directory or a PEFT LoRA checkpoint directory
// (adapter_config.json + adapter_model.safetensors; LoRA needs
// Options.LoraDensity). A file is only checked to be a readable regular
// file: it is opened, mapped and validated against the model by Acquire,
// each time it is opened, so a file changed after registration is read
// anew (an adapter already open keeps the bytes it mapped until it is
// closed: Unregister and Register again to switch to a new file at once).
// A checkpoint is converted here to a .shira file in the cache
// directory, unless that directory holds it already (converted for the
// same checkpoint bytes, model, name and options), and then used as such
// a file; the conversion uses the model and, for LoRA, ONNX Runtime
// (ort.Init must succeed) and stops when ctx ends.
//
// Errors wrap ErrInvalidName, ErrExists, ErrInvalidAdapter, ErrClosed or
// the file system's error (fs.ErrNotExist, ...).
func (l *Library) Register(ctx context.Context, name, path string) error {
	if err := l.register(ctx, name, path); err != nil {
		return fmt.Errorf("registry: register %s from %s: %w", closest.Quote(name), path, err)
	}
	return nil
}

func (l *Library) register(ctx context.Context, name, path string) error {
	if err := CheckName(name); err != nil {
		return err
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	if l.entries[name] != nil || l.pending[name] {
		l.mu.Unlock()
		return ErrExists
	}
	l.pending[name] = true
	l.busy.Add(1)
	l.mu.Unlock()

	e, err := l.prepare(ctx, name, path)

	l.mu.Lock()
	delete(l.pending, name)
	if err == nil && l.closed {
		err = ErrClosed
	}
	if err == nil {
		l.entries[name] = e
	}
	l.mu.Unlock()
	l.busy.Done()
	return err
}

// prepare checks path and, for a checkpoint, converts it.
func (l *Library) prepare(ctx context.Context, name, path string) (*entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		if _, err := os.Stat(filepath.Join(abs, peft.ConfigFile)); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("%w: a directory without %s (not a PEFT checkpoint)", ErrInvalidAdapter, peft.ConfigFile)
			}
			return nil, err
		}
		return l.convert(ctx, name, abs)
	}
	size, err := checkFile(abs)
	if err != nil {
		return nil, err
	}
	return &entry{name: name, path: abs, file: abs, source: SourceShira, size: size}, nil
}

// checkFile checks that path is a regular file this process can read and
// returns its size.
func checkFile(path string) (int64, error) {
	f, err := openRead(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if !st.Mode().IsRegular() {
		return 0, fmt.Errorf("%w: not a regular file (%v)", ErrInvalidAdapter, st.Mode().Type())
	}
	return st.Size(), nil
}

// RegisterDir registers every *.shira file directly in dir, under its file
// name without the extension, and every subdirectory holding
// adapter_config.json (a PEFT checkpoint), under the subdirectory's name
// (links are followed); hidden entries (names starting with '.') and
// anything else are skipped, but a *.shira entry that is not a regular
// file (a directory, a dangling link) is an error. It returns the
// names registered, in directory order; the errors of the entries that
// failed are joined (errors.Join), each naming its entry, and do not stop
// the others.
func (l *Library) RegisterDir(ctx context.Context, dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("registry: register directory: %w", err)
	}
	if l.isClosed() {
		return nil, fmt.Errorf("registry: register directory %s: %w", dir, ErrClosed)
	}
	var names []string
	var errs []error
	for _, de := range ents {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("registry: register directory %s: %w", dir, err))
			break
		}
		base := de.Name()
		if strings.HasPrefix(base, ".") {
			continue
		}
		p := filepath.Join(dir, base)
		name, isShira := strings.CutSuffix(base, ".shira")
		if st, err := os.Stat(p); err != nil || st.IsDir() { // follows links
			if _, cerr := os.Stat(filepath.Join(p, peft.ConfigFile)); err == nil && cerr == nil {
				name = base // a PEFT checkpoint
			} else if !isShira {
				continue // neither a checkpoint nor a .shira: not ours
			}
			// else a .shira that is a directory or a dangling link: Register says why
		} else if !isShira {
			continue
		}
		if err := l.Register(ctx, name, p); err != nil {
			errs = append(errs, err)
			if errors.Is(err, ErrClosed) {
				break
			}
			continue
		}
		names = append(names, name)
	}
	return names, errors.Join(errs...)
}

// Unregister removes name: later Acquires of it fail with ErrNotFound and
// the name may be registered again. An unused open adapter is closed now;
// one that is acquired stays usable by its holders and is closed by its
// last Release. A converted file stays in the cache directory.
func (l *Library) Unregister(name string) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return fmt.Errorf("registry: unregister %s: %w", closest.Quote(name), ErrClosed)
	}
	e := l.entries[name]
	if e == nil {
		l.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotFound, closest.Quote(name))
	}
	delete(l.entries, name)
	e.removed = true
	var done *adapter.Adapter
	if e.a != nil && e.users == 0 {
		l.unidle(e)
		done = l.drop(e)
	}
	l.mu.Unlock()
	l.closeAll(done)
	return nil
}

// Acquire returns the adapter registered as name, open and retained for
// the caller, who must call [Library.Release] with it exactly once when
// done (not a.Release), and must keep it acquired for as long as anything
// uses it: an adapter handed to a session stays acquired until the
// session has switched away from it.
//
// An adapter that is not open is opened (adapter.Open: mapped, its values
// checked finite) and validated against the model (fingerprint, target
// names, dtypes, shapes, base weights: patch.Patcher.Validate); a file that
// fails is an error wrapping ErrInvalidAdapter and adapter's or patch's
// error, and nothing is kept, so a later Acquire reads the file again.
// Concurrent Acquires of one name open it once. Every Acquire of a name
// returns the same *adapter.Adapter while it stays open; callers must not
// modify it nor Close it.
//
// Errors wrap ErrNotFound, ErrInvalidAdapter, ErrClosed, ctx.Err() (while
// waiting for another Acquire's open) or the file system's error (a file
// removed since registration wraps fs.ErrNotExist).
func (l *Library) Acquire(ctx context.Context, name string) (*adapter.Adapter, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("registry: acquire %s: %w", closest.Quote(name), err)
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil, fmt.Errorf("registry: acquire %s: %w", closest.Quote(name), ErrClosed)
		}
		e := l.entries[name]
		if e == nil {
			l.mu.Unlock()
			return nil, fmt.Errorf("%w: %s", ErrNotFound, closest.Quote(name))
		}
		if e.a != nil && e.users == 0 && e.a.Closed() {
			// Closed behind the library's back (by a holder, against
			// Acquire's contract): forget it and open the file again.
			l.unidle(e)
			l.drop(e)
		}
		if e.a != nil {
			l.stats.Hits++
			a, err := l.use(e)
			l.mu.Unlock()
			return a, err
		}
		if c := e.loading; c != nil {
			l.mu.Unlock()
			select {
			case <-c.done:
			case <-ctx.Done():
				return nil, fmt.Errorf("registry: acquire %s: %w", closest.Quote(name), ctx.Err())
			}
			if c.err != nil {
				return nil, c.err
			}
			continue // open now, unless already evicted: look again
		}
		c := &loadCall{done: make(chan struct{})}
		e.loading = c
		l.stats.Misses++
		l.busy.Add(1)
		l.mu.Unlock()

		a, size, err := l.load(e)

		l.mu.Lock()
		e.loading = nil
		switch {
		case err != nil:
		case l.closed:
			err = fmt.Errorf("registry: acquire %s: %w", closest.Quote(name), ErrClosed)
		case e.removed:
			err = fmt.Errorf("%w: %s (unregistered while it was opened)", ErrNotFound, closest.Quote(name))
		}
		if err != nil {
			c.err = err
			close(c.done)
			l.mu.Unlock()
			l.busy.Done()
			if a != nil {
				l.closeAll(a)
			}
			return nil, err
		}
		e.a, e.size = a, size
		l.open++
		l.openBytes += size
		a, err = l.use(e)
		close(c.done)
		l.mu.Unlock()
		l.busy.Done()
		return a, err
	}
}

// openAdapter is adapter.Open (a variable for the tests).
var openAdapter = adapter.Open

// load opens e's file and validates it against the model.
func (l *Library) load(e *entry) (*adapter.Adapter, int64, error) {
	fail := func(err error) (*adapter.Adapter, int64, error) {
		return nil, 0, fmt.Errorf("registry: open %s (%s): %w", closest.Quote(e.name), e.file, err)
	}
	a, err := openAdapter(e.file)
	if err != nil {
		if errors.Is(err, adapter.ErrInvalid) || errors.Is(err, adapter.ErrUnsupported) {
			l.log.Warn("registry: invalid adapter file", "name", e.name, "file", e.file, "err", err)
			return fail(fmt.Errorf("%w: %w", ErrInvalidAdapter, err))
		}
		return fail(err)
	}
	if err := l.v.check(a); err != nil {
		a.Close()
		if errors.Is(err, ErrClosed) {
			return fail(err)
		}
		l.log.Warn("registry: adapter does not fit the model", "name", e.name, "file", e.file, "err", err)
		return fail(fmt.Errorf("%w: %w", ErrInvalidAdapter, err))
	}
	// The size of the mapping adapter.Open made; a file replaced since
	// (by a rename) leaves the mapping as it was but is counted at its
	// new size, which only skews the byte bound until the next open.
	var size int64
	if st, err := os.Stat(e.file); err == nil {
		size = st.Size()
	}
	return a, size, nil
}

// use hands e's open adapter to one more holder. Called under mu.
func (l *Library) use(e *entry) (*adapter.Adapter, error) {
	if err := e.a.Retain(); err != nil { // closed by a holder (see Acquire)
		return nil, fmt.Errorf("registry: acquire %s: %w", closest.Quote(e.name), err)
	}
	l.unidle(e)
	e.users++
	l.inUse[e.a] = e
	return e.a, nil
}

// Release hands back an adapter returned by Acquire (once per Acquire).
// When no Acquire of it is outstanding any more, it becomes the most
// recently used of the unused open adapters, and the least recently used
// ones beyond Options.MaxOpen and MaxOpenBytes are closed (an adapter
// larger than MaxOpenBytes by itself is closed at once, and counts as an
// eviction); an adapter unregistered meanwhile, or one of a closed
// library, is closed. Release
// of an adapter this library did not hand out, or one released more often
// than it was acquired, panics, like adapter.Adapter.Release.
func (l *Library) Release(a *adapter.Adapter) {
	l.mu.Lock()
	e := l.inUse[a]
	if e == nil {
		l.mu.Unlock()
		panic("registry: Release of an adapter not acquired from this library (or released once too often)")
	}
	e.users--
	var done []*adapter.Adapter
	if e.users == 0 {
		delete(l.inUse, a)
		switch {
		case e.removed || l.closed:
			done = append(done, l.drop(e))
		case l.maxOpenBytes > 0 && e.size > l.maxOpenBytes:
			// Alone over the byte bound: closing the others would not
			// make room for it.
			l.stats.Evictions++
			l.log.Debug("registry: evicted", "name", e.name, "bytes", e.size)
			done = append(done, l.drop(e))
		default:
			e.elem = l.idle.PushFront(e)
			l.idleBytes += e.size
			done = l.evict(done)
		}
	}
	l.mu.Unlock()
	a.Release()
	l.closeAll(done...)
}

// evict closes unused adapters, least recently used first, until the
// bounds hold, appending them to done. Called under mu.
func (l *Library) evict(done []*adapter.Adapter) []*adapter.Adapter {
	for l.idle.Len() > l.maxOpen || (l.maxOpenBytes > 0 && l.idleBytes > l.maxOpenBytes) {
		e := l.idle.Back().Value.(*entry)
		l.unidle(e)
		l.stats.Evictions++
		l.log.Debug("registry: evicted", "name", e.name, "bytes", e.size)
		done = append(done, l.drop(e))
	}
	return done
}

// unidle takes e out of the idle list, if it is there. Called under mu.
func (l *Library) unidle(e *entry) {
	if e.elem != nil {
		l.idle.Remove(e.elem)
		e.elem = nil
		l.idleBytes -= e.size
	}
}

// drop forgets e's open adapter, which is not in use and not in the idle
// list, and returns it for closing outside mu. Called under mu.
func (l *Library) drop(e *entry) *adapter.Adapter {
	a := e.a
	e.a = nil
	l.open--
	l.openBytes -= e.size
	return a
}

// closeAll closes adapters (outside mu), logging failures.
func (l *Library) closeAll(as ...*adapter.Adapter) {
	for _, a := range as {
		if a == nil {
			continue
		}
		if err := a.Close(); err != nil {
			l.log.Warn("registry: close adapter", "name", a.Name, "err", err)
		}
	}
}

func (l *Library) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Names describes every registered adapter, sorted by name.
func (l *Library) Names() []Info {
	l.mu.Lock()
	out := make([]Info, 0, len(l.entries))
	for _, e := range l.entries {
		out = append(out, Info{Name: e.name, Path: e.path, File: e.file, Source: e.source,
			Open: e.a != nil, InUse: e.users, Bytes: e.size})
	}
	l.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Stats returns the library's gauges and counters.
func (l *Library) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.stats
	s.Registered = len(l.entries)
	s.Open = l.open
	s.OpenBytes = l.openBytes
	s.InUse = len(l.inUse)
	return s
}

// Close unregisters everything: unused open adapters are closed now,
// acquired ones by their last Release (which still works after Close).
// Conversions in progress are cancelled and waited for; later calls fail
// with ErrClosed. Close is idempotent; it does not close the model.
func (l *Library) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.cancel()
	var done []*adapter.Adapter
	for _, e := range l.entries {
		e.removed = true
		if e.a != nil && e.users == 0 {
			l.unidle(e)
			done = append(done, l.drop(e))
		}
	}
	clear(l.entries)
	l.mu.Unlock()

	var errs []error
	for _, a := range done {
		if err := a.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	l.busy.Wait()
	if err := l.v.close(); err != nil {
		errs = append(errs, err)
	}
	l.engineMu.Lock()
	if l.engine != nil {
		if err := l.engine.Close(); err != nil {
			errs = append(errs, err)
		}
		l.engine = nil
	}
	l.engineMu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("registry: close: %w", err)
	}
	return nil
}
