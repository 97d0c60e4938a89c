package serve_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/internal/synth"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/registry"
	"github.com/shira-ort/shira-ort/sched"
	"github.com/shira-ort/shira-ort/serve"
	"github.com/shira-ort/shira-ort/tensor"
)

// quiet drops the server's and the library's log lines (the tests provoke
// errors on purpose).
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// mlpName is the MLP's name in both protocols.
const mlpName = "mlp"

// mlpFixture is ort/testdata's small MLP (X f32[batch,8] -> MatMul W1[8,16]
// -> Relu -> MatMul W2[16,4] -> Add b -> Y f32[batch,4], W1 and W2
// exposed), exported into a temporary directory, with three synthetic
// adapters written as .shira files:
//
//	a: delta, default alpha 0.75, both weights
//	b: overwrite, default alpha 1, both weights
//	c: delta, default alpha 1, W2 only
type mlpFixture struct {
	dir      string // the exported model
	model    *export.Model
	adapters map[string]string // name -> .shira path
	opened   map[string]*adapter.Adapter

	mu     sync.Mutex
	oracle map[string]*ort.Session // spec -> plain session on the offline-fused model
}

func newMLP(t testing.TB) *mlpFixture {
	t.Helper()
	orttest.Require(t)
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "exported")
	if _, err := export.Expose(t.Context(), filepath.Join("..", "ort", "testdata", "mlp_plain.onnx"), dir, export.Options{}); err != nil {
		t.Fatal(err)
	}
	m, err := export.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	w, err := m.ReadWeights(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	f := &mlpFixture{dir: dir, model: m, adapters: map[string]string{}, opened: map[string]*adapter.Adapter{},
		oracle: map[string]*ort.Session{}}
	adir := filepath.Join(tmp, "adapters")
	if err := os.Mkdir(adir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, o := range []synth.Options{
		{Name: "a", Mask: synth.MaskRandom, Density: 0.3, Scale: 0.5, Seed: 1, Semantics: adapter.Delta, Alpha: 0.75},
		{Name: "b", Mask: synth.MaskRandom, Density: 0.25, Scale: 0.5, Seed: 2, Semantics: adapter.Overwrite},
		{Name: "c", Mask: synth.MaskWeightMagnitude, Density: 0.2, Scale: 0.5, Seed: 3, Semantics: adapter.Delta,
			Targets: regexpW2},
	} {
		a, err := synth.New(m.Manifest(), w, o)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(adir, o.Name+".shira")
		if err := adapter.Write(p, a); err != nil {
			t.Fatal(err)
		}
		opened, err := adapter.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { opened.Close() })
		f.adapters[o.Name] = p
		f.opened[o.Name] = opened
	}
	t.Cleanup(func() {
		for _, s := range f.oracle {
			s.Close()
		}
	})
	return f
}

// library returns a library over the fixture's model with every adapter
// registered (closed when the test ends).
func (f *mlpFixture) library(t testing.TB) *registry.Library {
	t.Helper()
	return newLibrary(t, f.model, f.adapters)
}

func newLibrary(t testing.TB, m *export.Model, adapters map[string]string) *registry.Library {
	t.Helper()
	lib, err := registry.New(registry.Options{Model: m, CacheDir: filepath.Join(t.TempDir(), "cache"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lib.Close() })
	for name, p := range adapters {
		if err := lib.Register(t.Context(), name, p); err != nil {
			t.Fatal(err)
		}
	}
	return lib
}

// session opens the exported model in mode (closed when the test ends).
func openSession(t testing.TB, m *export.Model, mode ort.Mode) *ort.Session {
	t.Helper()
	s, err := ort.OpenExported(t.Context(), m, &ort.Options{Mode: mode, IntraOpThreads: 1, CheckFinite: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// configs parses a specification as the server does ("" base; "name",
// "name@alpha", joined by commas) into the fixture's opened adapters.
func (f *mlpFixture) configs(t testing.TB, spec string) []patch.Config {
	t.Helper()
	if spec == "" || spec == mlpName {
		return nil
	}
	return parseConfigs(t, spec, func(name string) *adapter.Adapter {
		a := f.opened[name]
		if a == nil {
			t.Fatalf("no adapter %q in the fixture", name)
		}
		return a
	})
}

// parseConfigs turns "name[@alpha],..." into configurations of the
// adapters open returns (alpha defaults to the adapter's own).
func parseConfigs(t testing.TB, spec string, open func(name string) *adapter.Adapter) []patch.Config {
	t.Helper()
	var cfgs []patch.Config
	for _, p := range strings.Split(spec, ",") {
		name, alpha, has := strings.Cut(p, "@")
		c := patch.Default(open(name))
		if has {
			v, err := strconv.ParseFloat(alpha, 32)
			if err != nil {
				t.Fatal(err)
			}
			c.Alpha = float32(v)
		}
		cfgs = append(cfgs, c)
	}
	return cfgs
}

// fusedPath fuses the configuration offline (export.Model.Fuse, the code a
// live session runs) and writes it as a standalone model.
func fusedPath(t testing.TB, m *export.Model, cfgs []patch.Config) string {
	t.Helper()
	weights, err := m.Fuse(t.Context(), cfgs)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "fused.onnx")
	if err := m.WriteStandalone(t.Context(), weights, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// oracleSession returns a session on the offline-fused model of spec: plain
// ORT on the standalone model for packed sessions (the same prepacked
// kernels), or the fused model exported again and opened live for live
// sessions (the same non-prepacked kernels).
func (f *mlpFixture) oracleSession(t testing.TB, spec string, mode ort.Mode) *ort.Session {
	t.Helper()
	key := mode.String() + "|" + spec
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.oracle[key]; s != nil {
		return s
	}
	path := fusedPath(t, f.model, f.configs(t, spec))
	var s *ort.Session
	var err error
	if mode == ort.ModeLive {
		dir := filepath.Join(t.TempDir(), "fused-exported")
		if _, err := export.Expose(t.Context(), path, dir, export.Options{}); err != nil {
			t.Fatal(err)
		}
		s, err = ort.Open(t.Context(), dir, &ort.Options{Mode: ort.ModeLive, IntraOpThreads: 1})
	} else {
		s, err = ort.OpenModel(t.Context(), path, &ort.Options{IntraOpThreads: 1})
	}
	if err != nil {
		t.Fatal(err)
	}
	f.oracle[key] = s
	return s
}

// want runs the oracle of spec on x ([rows, 8]) and returns Y.
func (f *mlpFixture) want(t testing.TB, spec string, mode ort.Mode, x []float32) []float32 {
	t.Helper()
	s := f.oracleSession(t, spec, mode)
	return runMLP(t, s, x)
}

func runMLP(t testing.TB, s *ort.Session, x []float32) []float32 {
	t.Helper()
	in, err := tensor.FromFloat32([]int64{int64(len(x) / 8), 8}, x)
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Run(context.Background(), map[string]*tensor.Tensor{"X": in})
	if err != nil {
		t.Fatal(err)
	}
	y, err := out["Y"].AsFloat32()
	if err != nil {
		t.Fatal(err)
	}
	return y
}

var regexpW2 = regexp.MustCompile("^W2$")

// randomX returns rows*8 normal values.
func randomX(rng *rand.Rand, rows int) []float32 {
	x := make([]float32, rows*8)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

// server builds a Server on eng with o (Name, Engine and Logger filled in
// when unset) behind an httptest server; both are closed when the test
// ends.
func newServer(t testing.TB, o serve.Options) (*serve.Server, *httptest.Server) {
	t.Helper()
	if o.Logger == nil {
		o.Logger = quiet
	}
	srv, err := serve.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ts.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			t.Errorf("Server.Close: %v", err)
		}
	})
	return srv, ts
}

// mlpServer serves the fixture's model in mode with every adapter.
func (f *mlpFixture) server(t testing.TB, mode ort.Mode, o serve.Options) (*serve.Server, *httptest.Server, *registry.Library, *ort.Session) {
	t.Helper()
	lib := f.library(t)
	sess := openSession(t, f.model, mode)
	if o.Name == "" {
		o.Name = mlpName
	}
	if o.Engine == nil {
		o.Engine = serve.ShiraEngine(sess, lib)
	}
	srv, ts := newServer(t, o)
	return srv, ts, lib, sess
}

// inferBody is a KServe infer request for the MLP with x as [rows, 8].
func inferBody(spec string, x []float32) []byte {
	var b bytes.Buffer
	b.WriteString(`{"id":"t","inputs":[{"name":"X","datatype":"FP32","shape":[`)
	b.WriteString(strconv.Itoa(len(x) / 8))
	b.WriteString(`,8],"data":[`)
	for i, v := range x {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatFloat(float64(v), 'g', -1, 32))
	}
	b.WriteString(`]}]`)
	if spec != "" {
		fmt.Fprintf(&b, `,"parameters":{"adapter":%q}`, spec)
	}
	b.WriteString(`}`)
	return b.Bytes()
}

// inferResponse is the part of a KServe response the tests read.
type inferResponse struct {
	ModelName  string         `json:"model_name"`
	ID         string         `json:"id"`
	Parameters map[string]any `json:"parameters"`
	Outputs    []struct {
		Name     string        `json:"name"`
		Shape    []int64       `json:"shape"`
		Datatype string        `json:"datatype"`
		Data     []json.Number `json:"data"`
	} `json:"outputs"`
}

// post posts body to url and returns the status and the response body.
func post(t testing.TB, url string, body []byte) (int, []byte) {
	t.Helper()
	return postCtx(t, context.Background(), url, body)
}

func postCtx(t testing.TB, ctx context.Context, url string, body []byte) (int, []byte) {
	t.Helper()
	code, _, b, err := tryPost(ctx, url, body)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	return code, b
}

// tryPost is post for goroutines: it returns the error instead of failing.
func tryPost(ctx context.Context, url string, body []byte) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b, err
}

func get(t testing.TB, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// tryInfer posts an MLP infer request and returns Y parsed back to float32
// bits, or an error describing a non-200 answer.
func tryInfer(ctx context.Context, base, spec string, x []float32) ([]float32, error) {
	code, _, body, err := tryPost(ctx, base+"/v2/models/"+mlpName+"/infer", inferBody(spec, x))
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("status %d: %s", code, body)
	}
	return parseY(body, len(x)/8)
}

// parseY reads output Y of a KServe response, each number parsed as a
// float32 (the server writes the shortest decimal that reads back to the
// same bits).
func parseY(body []byte, rows int) ([]float32, error) {
	var r inferResponse
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("response %s: %v", body, err)
	}
	if r.ModelName != mlpName || len(r.Outputs) != 1 || r.Outputs[0].Name != "Y" || r.Outputs[0].Datatype != "FP32" {
		return nil, fmt.Errorf("unexpected response %s", body)
	}
	o := r.Outputs[0]
	if len(o.Shape) != 2 || o.Shape[0] != int64(rows) || o.Shape[1] != 4 || len(o.Data) != rows*4 {
		return nil, fmt.Errorf("output shape %v with %d values, want [%d 4]", o.Shape, len(o.Data), rows)
	}
	y := make([]float32, len(o.Data))
	for i, n := range o.Data {
		v, err := strconv.ParseFloat(string(n), 32)
		if err != nil {
			return nil, fmt.Errorf("value %d %q: %v", i, n, err)
		}
		y[i] = float32(v)
	}
	return y, nil
}

// infer is tryInfer that must succeed.
func infer(t testing.TB, base, spec string, x []float32) []float32 {
	t.Helper()
	y, err := tryInfer(context.Background(), base, spec, x)
	if err != nil {
		t.Fatalf("infer %q: %v", spec, err)
	}
	return y
}

// bitDiff describes the first bitwise difference between two float32
// slices, or returns "".
func bitDiff(got, want []float32) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d values, want %d", len(got), len(want))
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			return fmt.Sprintf("value %d: %v (%#08x), want %v (%#08x)", i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
		}
	}
	return ""
}

// slowBackend wraps a Backend: each Run waits for gate to close and
// sleeps delay (or until its ctx ends) first, and may panic on keys in panicOn; Switch panics while
// panicSwitch is set.
type slowBackend struct {
	inner   sched.Backend
	started chan struct{} // when set, gets a token as each Run starts (non-blocking)
	gate    chan struct{} // when set, every Run waits until it is closed (or its ctx ends)

	mu          sync.Mutex
	delay       time.Duration
	panicOn     map[sched.Key]bool
	panicSwitch bool
}

func (b *slowBackend) Switch(ctx context.Context, key sched.Key) error {
	b.mu.Lock()
	p := b.panicSwitch
	b.mu.Unlock()
	if p {
		panic("test backend panics switching to " + string(key))
	}
	return b.inner.Switch(ctx, key)
}

func (b *slowBackend) Run(ctx context.Context, key sched.Key, in map[string]*tensor.Tensor) (map[string]*tensor.Tensor, error) {
	if b.started != nil {
		select {
		case b.started <- struct{}{}:
		default:
		}
	}
	b.mu.Lock()
	p, delay := b.panicOn[key], b.delay
	b.mu.Unlock()
	if p {
		panic("test backend panics on " + string(key))
	}
	if b.gate != nil {
		select {
		case <-b.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return b.inner.Run(ctx, key, in)
}

// decodeResponse decodes a KServe response.
func decodeResponse(t testing.TB, body []byte) inferResponse {
	t.Helper()
	var r inferResponse
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("response %s: %v", body, err)
	}
	return r
}

// metricValues are the samples of a /metrics scrape by series, written as
// Prometheus writes them: name{label="value",...} (labels sorted).
type metricValues map[string]float64

func (m metricValues) value(series string) float64 { return m[series] }

// scrape reads /metrics.
func scrape(t testing.TB, base string) metricValues {
	t.Helper()
	code, body := get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	m := metricValues{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("metrics line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		m[line[:i]] = v
	}
	return m
}
