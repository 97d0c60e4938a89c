package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shira-ort/shira-ort/internal/textgen"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/registry"
	"github.com/shira-ort/shira-ort/sched"
)

// Errors of this package, for errors.Is.
var (
	// ErrUnknownAdapter reports a request naming an adapter the catalog
	// does not have.
	ErrUnknownAdapter = errors.New("serve: unknown adapter")
	// ErrBadRequest reports a malformed or invalid request.
	ErrBadRequest = errors.New("serve: bad request")
	// ErrLoadDisabled reports a load or unload request on a server without
	// Options.AdapterRoot.
	ErrLoadDisabled = errors.New("serve: loading and unloading adapters at run time is disabled (no adapter root)")
)

// Defaults of Options.
const (
	DefaultMaxBodyBytes   = 32 << 20
	DefaultRequestTimeout = 60 * time.Second
	DefaultMaxTokens      = 512
)

// Options configure a Server.
type Options struct {
	// Name is the model's name in both protocols (KServe's {model}; the
	// OpenAI "model" field that means the base model). Required.
	Name string
	// Engine is what the server runs. Required.
	Engine *Engine
	// Sched tunes the scheduler (Exclusive is taken from the Engine).
	Sched sched.Options
	// Text, when set, enables the OpenAI-style completions endpoint: the
	// model is a character language model (internal/textgen conventions:
	// int64 tokens [batch, seq] in, float32 logits [batch, seq, vocab]
	// out) with this vocabulary.
	Text *textgen.Vocab
	// AdapterRoot, when set, enables loading and unloading adapters at run
	// time (POST /v1/load_lora_adapter, /v1/unload_lora_adapter); a path
	// to load must lie inside this directory after following links.
	AdapterRoot string
	// MaxBodyBytes bounds a request body (413 beyond); 0 means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// RequestTimeout bounds a request from admission to response (504);
	// 0 means DefaultRequestTimeout.
	RequestTimeout time.Duration
	// MaxTokens bounds max_tokens of a completion; 0 means
	// DefaultMaxTokens.
	MaxTokens int
	// Logger receives one structured line per request; nil means
	// slog.Default().
	Logger *slog.Logger
	// Registerer receives the server's Prometheus metrics; nil means a
	// registry of the server's own, served at /metrics.
	Registerer prometheus.Registerer
	// Gatherer is served at /metrics when Registerer is set; nil means
	// the Registerer, which must then be a Gatherer too (as a
	// *prometheus.Registry is).
	Gatherer prometheus.Gatherer
}

// Server serves one model with adapters over HTTP: the Open Inference
// Protocol (KServe v2 REST), an OpenAI-style completions API for text
// generators, adapter listing, loading and unloading, and Prometheus
// metrics. Create it with New, serve Handler, stop it with Close.
type Server struct {
	o         Options
	eng       *Engine
	sched     *sched.Scheduler
	m         *metrics
	mux       *http.ServeMux
	log       *slog.Logger
	reqID     atomic.Uint64
	closing   atomic.Bool
	admitMu   sync.Mutex     // orders admissions with closing
	admitted  sync.WaitGroup // requests admitted and not yet released
	started   time.Time
	root      string // AdapterRoot, absolute and with links followed
	rootGiven string // AdapterRoot, absolute
}

// New creates a Server. The server does not own the Engine's session or
// catalog; Close drains the server's own queue.
func New(o Options) (*Server, error) {
	if o.Name == "" || o.Engine == nil || o.Engine.Backend == nil || o.Engine.Catalog == nil {
		return nil, fmt.Errorf("%w: serve.Options needs Name and an Engine with a Backend and a Catalog", ErrBadRequest)
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.MaxTokens <= 0 {
		o.MaxTokens = DefaultMaxTokens
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Sched.MaxBatch > 1 && !Batchable(o.Engine) {
		// The scheduler would concatenate requests the model cannot take
		// together, and every such Run would fail.
		return nil, fmt.Errorf("%w: Sched.MaxBatch %d needs a free leading batch dimension on every input and output of the model", ErrBadRequest, o.Sched.MaxBatch)
	}
	s := &Server{o: o, eng: o.Engine, log: o.Logger, started: time.Now()}
	if o.AdapterRoot != "" {
		given, err := filepath.Abs(o.AdapterRoot)
		root := given
		if err == nil {
			root, err = filepath.EvalSymlinks(given)
		}
		if err != nil {
			return nil, fmt.Errorf("serve: adapter root: %w", err)
		}
		s.root, s.rootGiven = root, given
	}
	reg, gat := o.Registerer, o.Gatherer
	if reg == nil {
		r := prometheus.NewRegistry()
		reg, gat = r, r
	}
	if gat == nil {
		// /metrics would panic on every scrape.
		g, ok := reg.(prometheus.Gatherer)
		if !ok {
			return nil, fmt.Errorf("%w: serve.Options.Registerer is set but Gatherer is not", ErrBadRequest)
		}
		gat = g
	}
	m, err := newMetrics(reg, o.Engine)
	if err != nil {
		return nil, err
	}
	s.m = m
	so := o.Sched
	so.Exclusive = o.Engine.Exclusive
	so.Observer = m.observer(so.Observer)
	if b, ok := o.Engine.Backend.(switchObserver); ok {
		b.observeSwitches(so.Observer.Switched)
	}
	if s.sched, err = sched.New(o.Engine.Backend, so); err != nil {
		return nil, err
	}
	s.mux = http.NewServeMux()
	s.routes(gat)
	return s, nil
}

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.mux }

// Scheduler returns the server's scheduler (for its Stats).
func (s *Server) Scheduler() *sched.Scheduler { return s.sched }

// Close stops accepting requests (503 from then on, and the readiness
// endpoint says not ready), waits until ctx ends for the requests admitted
// before (a completion's remaining tokens included) and the queued and
// running ones, then releases the adapters the backend holds. Call it after
// http.Server.Shutdown has returned, or with a ctx that leaves in-flight
// handlers time to finish.
func (s *Server) Close(ctx context.Context) error {
	s.admitMu.Lock()
	s.closing.Store(true)
	s.admitMu.Unlock()
	// Requests admitted before may still have scheduler requests to make
	// (a completion makes one per token): wait for them first.
	drained := make(chan struct{})
	go func() {
		s.admitted.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-ctx.Done():
	}
	err := s.sched.Close(ctx)
	if c, ok := s.eng.Backend.(closer); ok {
		c.close()
	}
	return err
}

func (s *Server) routes(gat prometheus.Gatherer) {
	h := func(name string, f func(w http.ResponseWriter, r *http.Request) error) http.Handler {
		return s.wrap(name, f)
	}
	// Open Inference Protocol (KServe v2).
	s.mux.Handle("GET /v2/health/live", h("live", s.live))
	s.mux.Handle("GET /v2/health/ready", h("ready", s.ready))
	s.mux.Handle("GET /v2", h("server_metadata", s.serverMetadata))
	s.mux.Handle("GET /v2/models/{model}", h("model_metadata", s.modelMetadata))
	s.mux.Handle("GET /v2/models/{model}/ready", h("model_ready", s.modelReady))
	s.mux.Handle("POST /v2/models/{model}/infer", h("infer", s.infer))
	// OpenAI-style.
	s.mux.Handle("GET /v1/models", h("models", s.listModels))
	if s.o.Text != nil {
		s.mux.Handle("POST /v1/completions", h("completions", s.completions))
	}
	s.mux.Handle("POST /v1/load_lora_adapter", h("load_adapter", s.loadAdapter))
	s.mux.Handle("POST /v1/unload_lora_adapter", h("unload_adapter", s.unloadAdapter))
	// Metrics.
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(gat, promhttp.HandlerOpts{}))
}

// httpError is an error with the status it is answered with.
type httpError struct {
	status int
	err    error
}

func (e *httpError) Error() string { return e.err.Error() }
func (e *httpError) Unwrap() error { return e.err }

// status returns the HTTP status for err: 4xx for what the client can fix,
// 503 for overload and shutdown, 504 for a request that ran out of time.
func status(err error) int {
	var he *httpError
	switch {
	case errors.As(err, &he):
		return he.status
	case errors.Is(err, ErrBadRequest), errors.Is(err, sched.ErrBadKey), errors.Is(err, ort.ErrInput),
		errors.Is(err, registry.ErrInvalidName):
		return http.StatusBadRequest
	case isNotFound(err):
		return http.StatusNotFound
	case errors.Is(err, registry.ErrExists):
		return http.StatusConflict
	case errors.Is(err, registry.ErrInvalidAdapter), errors.Is(err, patch.ErrConfig), errors.Is(err, patch.ErrNonFinite):
		return http.StatusUnprocessableEntity
	case errors.Is(err, ErrLoadDisabled):
		return http.StatusForbidden
	case errors.Is(err, sched.ErrOverloaded), errors.Is(err, sched.ErrClosed), errors.Is(err, registry.ErrClosed):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, context.Canceled):
		return 499 // the client went away (nginx's code); nobody reads it
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusInternalServerError
}

// requestIDKey keys the request's id (its log line's "id") in its context.
type requestIDKey struct{}

// requestID returns the id wrap gave the request.
func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// wrap turns a handler returning an error into an http.Handler with the
// request timeout, the body limit, metrics and one log line.
func (s *Server) wrap(name string, f func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t0 := time.Now()
		id := strconv.FormatUint(s.reqID.Add(1), 10)
		ctx, cancel := context.WithTimeout(r.Context(), s.o.RequestTimeout)
		defer cancel()
		ctx = context.WithValue(ctx, requestIDKey{}, id)
		r = r.WithContext(ctx)
		r.Body = http.MaxBytesReader(w, r.Body, s.o.MaxBodyBytes)
		sw := &statusWriter{ResponseWriter: w}
		err := s.safe(func() error { return f(sw, r) })
		if err != nil && !sw.wrote {
			code := status(err)
			if code == http.StatusServiceUnavailable {
				sw.Header().Set("Retry-After", "1")
			}
			writeJSON(sw, code, map[string]string{"error": err.Error()})
		}
		code := sw.code
		if code == 0 {
			code = http.StatusOK
		}
		d := time.Since(t0)
		s.m.request(name, code, d)
		attrs := []any{"id", id, "endpoint", name, "method", r.Method, "path", r.URL.Path, "status", code, "ms", float64(d.Microseconds()) / 1000}
		if err != nil {
			attrs = append(attrs, "error", err.Error())
		}
		level := slog.LevelInfo
		if code >= 500 && code != http.StatusServiceUnavailable {
			level = slog.LevelError
		}
		s.log.Log(ctx, level, "request", attrs...)
	})
}

// safe runs f, turning a panic into an error: a server never panics on a
// request.
func (s *Server) safe(f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			err = fmt.Errorf("serve: internal error: %v", v)
		}
	}()
	return f()
}

// statusWriter records the status written and whether anything was.
type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.code, w.wrote = http.StatusOK, true
	}
	return w.ResponseWriter.Write(b)
}

// Flush lets server-sent events through.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	// Encode before the status line goes out: a value that does not
	// encode is a 500, not a 200 with an empty body.
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b, _ = json.Marshal(map[string]string{"error": fmt.Sprintf("serve: encoding the response: %v", err)})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

// decodeJSON reads one JSON value from the (size-limited) body into v,
// refusing trailing data.
func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &httpError{http.StatusRequestEntityTooLarge, fmt.Errorf("%w: body larger than %d bytes", ErrBadRequest, mbe.Limit)}
		}
		return fmt.Errorf("%w: malformed JSON: %v", ErrBadRequest, err)
	}
	// Only white space may follow (dec.More would let a stray '}' or
	// ']' through).
	if _, err := dec.Token(); err != io.EOF {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &httpError{http.StatusRequestEntityTooLarge, fmt.Errorf("%w: body larger than %d bytes", ErrBadRequest, mbe.Limit)}
		}
		return fmt.Errorf("%w: trailing data after the JSON body", ErrBadRequest)
	}
	return nil
}

// admission is a request's adapter configuration, held from admission
// until the response.
type admission struct {
	key     sched.Key // what the scheduler groups by (adapters named as the catalog keys them)
	shown   sched.Key // the configuration with the adapters' names, for responses
	release func()
}

// admit parses an adapter specification, "" for the base model or
// "name[@alpha],name[@alpha],..." (alpha defaults to the adapter's own),
// and acquires every adapter from the catalog, so an unknown or invalid
// adapter is answered before anything is queued and none is evicted
// while the request uses it. Close waits for admitted requests to be
// released before it closes the scheduler, so a request admitted before
// Close (a completion runs one scheduler request per token) completes.
func (s *Server) admit(ctx context.Context, spec string) (*admission, error) {
	s.admitMu.Lock()
	if s.closing.Load() {
		s.admitMu.Unlock()
		return nil, sched.ErrClosed
	}
	s.admitted.Add(1)
	s.admitMu.Unlock()
	admitted := false
	defer func() {
		if !admitted { // an error, or a panic in the catalog
			s.admitted.Done()
		}
	}()
	adm, err := s.admitSpec(ctx, spec)
	if err != nil {
		return nil, err
	}
	admitted = true
	release := adm.release
	adm.release = sync.OnceFunc(func() {
		release()
		s.admitted.Done()
	})
	return adm, nil
}

func (s *Server) admitSpec(ctx context.Context, spec string) (*admission, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" || spec == s.o.Name {
		return &admission{key: sched.Base, shown: sched.Base, release: func() {}}, nil
	}
	parts := strings.Split(spec, ",")
	if len(parts) > 64 {
		return nil, fmt.Errorf("%w: %d adapters in one configuration (at most 64)", ErrBadRequest, len(parts))
	}
	var releases []func()
	releaseAll := func() {
		for _, r := range releases {
			r()
		}
	}
	ok := false
	defer func() {
		if !ok { // an error, or a panic in the catalog
			releaseAll()
		}
	}()
	keyed, _ := s.eng.Catalog.(keyedCatalog)
	entries := make([]sched.Entry, 0, len(parts))
	shown := make([]sched.Entry, 0, len(parts))
	for _, p := range parts {
		name, alphaText, hasAlpha := strings.Cut(strings.TrimSpace(p), "@")
		var given float64
		if hasAlpha { // checked before the adapter is opened
			a, err := strconv.ParseFloat(alphaText, 32)
			if err != nil || math.IsNaN(a) || math.IsInf(a, 0) {
				return nil, fmt.Errorf("%w: adapter %q: alpha %q is not a finite number", ErrBadRequest, name, alphaText)
			}
			given = a
		}
		keyName := name
		var alpha float32
		var release func()
		var err error
		if keyed != nil {
			keyName, alpha, release, err = keyed.acquireKey(ctx, name)
		} else {
			alpha, release, err = s.eng.Catalog.Acquire(ctx, name)
		}
		if err != nil {
			if isNotFound(err) {
				return nil, &httpError{http.StatusNotFound, fmt.Errorf("%w %q: %v", ErrUnknownAdapter, name, err)}
			}
			return nil, err
		}
		releases = append(releases, release)
		if hasAlpha {
			alpha = float32(given)
		}
		entries = append(entries, sched.Entry{Name: keyName, Alpha: alpha})
		shown = append(shown, sched.Entry{Name: name, Alpha: alpha})
	}
	key, err := sched.NewKey(entries)
	if err != nil {
		return nil, err
	}
	ok = true
	return &admission{key: key, shown: sched.KeyOf(shown), release: releaseAll}, nil
}

// loadAdapter is POST /v1/load_lora_adapter {"lora_name", "lora_path"}
// (the convention of multi-LoRA servers), for every kind of adapter the
// catalog takes.
func (s *Server) loadAdapter(w http.ResponseWriter, r *http.Request) error {
	if s.root == "" {
		return ErrLoadDisabled
	}
	var req struct {
		Name string `json:"lora_name"`
		Path string `json:"lora_path"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Name == "" || req.Path == "" {
		return fmt.Errorf("%w: lora_name and lora_path are required", ErrBadRequest)
	}
	if req.Name == s.o.Name {
		return &httpError{http.StatusConflict, fmt.Errorf("%w: %q is the base model's name", ErrBadRequest, req.Name)}
	}
	path, err := s.inRoot(req.Path)
	if err != nil {
		return err
	}
	if err := s.eng.Catalog.Load(r.Context(), req.Name, path); err != nil {
		return err
	}
	s.log.Info("adapter loaded", "name", req.Name, "path", path)
	writeJSON(w, http.StatusOK, map[string]string{"status": "loaded", "name": req.Name})
	return nil
}

// inRoot resolves p (relative paths against the root) and refuses a path
// outside AdapterRoot after following links.
func (s *Server) inRoot(p string) (string, error) {
	if !filepath.IsAbs(p) {
		p = filepath.Join(s.root, p)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		if !within(s.root, filepath.Clean(p)) && !within(s.rootGiven, filepath.Clean(p)) {
			// Outside even before links are followed: whether it exists
			// is none of the client's business.
			return "", &httpError{http.StatusForbidden, fmt.Errorf("%w: %s is outside the adapter root", ErrBadRequest, p)}
		}
		if errors.Is(err, os.ErrNotExist) {
			return "", &httpError{http.StatusNotFound, fmt.Errorf("%w: %s does not exist", ErrBadRequest, p)}
		}
		return "", fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if !within(s.root, real) {
		return "", &httpError{http.StatusForbidden, fmt.Errorf("%w: %s is outside the adapter root", ErrBadRequest, p)}
	}
	return real, nil
}

// within reports whether the clean path p is root or below it.
func within(root, p string) bool {
	if root == "" {
		return false
	}
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// unloadAdapter is POST /v1/unload_lora_adapter {"lora_name"}.
func (s *Server) unloadAdapter(w http.ResponseWriter, r *http.Request) error {
	if s.root == "" {
		return ErrLoadDisabled
	}
	var req struct {
		Name string `json:"lora_name"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Name == "" {
		return fmt.Errorf("%w: lora_name is required", ErrBadRequest)
	}
	if err := s.eng.Catalog.Unload(req.Name); err != nil {
		return err
	}
	s.log.Info("adapter unloaded", "name", req.Name)
	writeJSON(w, http.StatusOK, map[string]string{"status": "unloaded", "name": req.Name})
	return nil
}
