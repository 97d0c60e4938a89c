package serve_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/shira-ort/shira-ort/internal/demo/charlm"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/registry"
	"github.com/shira-ort/shira-ort/sched"
	"github.com/shira-ort/shira-ort/serve"
	"github.com/shira-ort/shira-ort/tensor"
)

// badCase is a request that must be refused with code.
type badCase struct {
	name string
	path string // under the server's URL
	body string
	code int
}

// checkRefused posts c and checks the status and the JSON error body.
func checkRefused(t *testing.T, base string, c badCase) {
	t.Helper()
	code, hdr, body, err := tryPost(context.Background(), base+c.path, []byte(c.body))
	if err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	var e struct {
		Error string `json:"error"`
	}
	if code != c.code {
		t.Errorf("%s: status %d (%s), want %d", c.name, code, bytes.TrimSpace(body), c.code)
		return
	}
	if json.Unmarshal(body, &e) != nil || e.Error == "" || hdr.Get("Content-Type") != "application/json" {
		t.Errorf("%s: status %d with body %q (Content-Type %q), want a JSON error", c.name, code, body, hdr.Get("Content-Type"))
	}
}

// mlpRequest is a KServe request for the MLP with the given inputs JSON
// and extra top-level fields.
func mlpRequest(inputs string, extra ...string) string {
	s := `{"inputs":` + inputs
	for _, e := range extra {
		s += "," + e
	}
	return s + "}"
}

const goodX = `{"name":"X","datatype":"FP32","shape":[1,8],"data":[1,2,3,4,5,6,7,8]}`

// TestInferBadInput sends every kind of bad KServe request: each gets a
// clear 4xx with a JSON error, reaches neither the scheduler nor the
// session (no request submitted, no switch) and holds no adapter; a good
// request after each still returns exactly the expected output without a
// switch.
func TestInferBadInput(t *testing.T) {
	f := newMLP(t)
	// A corrupt adapter file, registered (Register only checks it is a
	// readable file) and refused when a request asks for it; and an
	// adapter made for another model.
	corrupt := filepath.Join(t.TempDir(), "corrupt.shira")
	good, err := os.ReadFile(f.adapters["a"])
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(good)
	for i := len(bad) / 2; i < len(bad)/2+64 && i < len(bad); i++ {
		bad[i] ^= 0xff
	}
	if err := os.WriteFile(corrupt, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	cf := newCharlm(t)
	srv, ts, lib, _ := f.server(t, ort.ModePacked, serve.Options{MaxBodyBytes: 4096})
	if err := lib.Register(t.Context(), "corrupt", corrupt); err != nil {
		t.Fatalf("Register of a corrupt file: %v (it only checks the file is readable)", err)
	}
	if err := lib.Register(t.Context(), "other", cf.ws.Shira[charlm.Styles()[0]]); err != nil {
		t.Fatal(err)
	}
	if err := lib.Register(t.Context(), "trunc", writeTemp(t, good[:len(good)/3])); err != nil {
		t.Fatal(err)
	}

	x0 := []float32{1, 2, 3, 4, 5, 6, 7, 8}
	want := f.want(t, "a", ort.ModePacked, x0)
	if d := bitDiff(infer(t, ts.URL, "a", x0), want); d != "" {
		t.Fatal(d)
	}
	active := srv.Scheduler().Stats().Active // a@0.75, as the scheduler keys it
	inferPath := "/v2/models/" + mlpName + "/infer"
	adapterParam := func(spec string) string { return fmt.Sprintf(`"parameters":{"adapter":%q}`, spec) }
	huge := `[` + strings.Repeat(`1,`, 3000) + `1]`
	cases := []badCase{
		{"unknown adapter", inferPath, mlpRequest("["+goodX+"]", adapterParam("zzz")), 404},
		{"unknown adapter after a known one", inferPath, mlpRequest("["+goodX+"]", adapterParam("a,zzz")), 404},
		{"unknown adapter with alpha", inferPath, mlpRequest("["+goodX+"]", adapterParam("zzz@0.5")), 404},
		{"empty adapter name", inferPath, mlpRequest("["+goodX+"]", adapterParam("a,")), 404},
		{"adapter file that fails validation", inferPath, mlpRequest("["+goodX+"]", adapterParam("corrupt")), 422},
		{"truncated adapter file", inferPath, mlpRequest("["+goodX+"]", adapterParam("trunc")), 422},
		{"adapter for another model", inferPath, mlpRequest("["+goodX+"]", adapterParam("other")), 422},
		{"adapter parameter not a string", inferPath, mlpRequest("["+goodX+"]", `"parameters":{"adapter":5}`), 400},
		{"alpha not a number", inferPath, mlpRequest("["+goodX+"]", adapterParam("a@x")), 400},
		{"empty alpha", inferPath, mlpRequest("["+goodX+"]", adapterParam("a@")), 400},
		{"two alphas", inferPath, mlpRequest("["+goodX+"]", adapterParam("a@0.5@2")), 400},
		{"alpha NaN", inferPath, mlpRequest("["+goodX+"]", adapterParam("a@NaN")), 400},
		{"alpha nan", inferPath, mlpRequest("["+goodX+"]", adapterParam("a@nan")), 400},
		{"alpha Inf", inferPath, mlpRequest("["+goodX+"]", adapterParam("a@Inf")), 400},
		{"alpha -infinity", inferPath, mlpRequest("["+goodX+"]", adapterParam("a@-infinity")), 400},
		{"alpha overflows float32", inferPath, mlpRequest("["+goodX+"]", adapterParam("a@1e39")), 400},
		{"alpha NaN in second entry", inferPath, mlpRequest("["+goodX+"]", adapterParam("b,a@+NaN")), 400},
		{"too many adapters", inferPath, mlpRequest("["+goodX+"]", adapterParam(strings.Repeat("a,", 64)+"a")), 400},
		{"wrong dtype FP64", inferPath, mlpRequest(`[{"name":"X","datatype":"FP64","shape":[1,8],"data":[1,2,3,4,5,6,7,8]}]`), 400},
		{"wrong dtype INT64", inferPath, mlpRequest(`[{"name":"X","datatype":"INT64","shape":[1,8],"data":[1,2,3,4,5,6,7,8]}]`), 400},
		{"unknown dtype", inferPath, mlpRequest(`[{"name":"X","datatype":"BYTES","shape":[1,8],"data":[1,2,3,4,5,6,7,8]}]`), 400},
		{"lower-case dtype", inferPath, mlpRequest(`[{"name":"X","datatype":"fp32","shape":[1,8],"data":[1,2,3,4,5,6,7,8]}]`), 400},
		{"wrong rank", inferPath, mlpRequest(`[{"name":"X","datatype":"FP32","shape":[8],"data":[1,2,3,4,5,6,7,8]}]`), 400},
		{"wrong fixed dimension", inferPath, mlpRequest(`[{"name":"X","datatype":"FP32","shape":[2,4],"data":[1,2,3,4,5,6,7,8]}]`), 400},
		{"zero rows", inferPath, mlpRequest(`[{"name":"X","datatype":"FP32","shape":[0,8],"data":[]}]`), 400},
		{"negative dimension", inferPath, mlpRequest(`[{"name":"X","datatype":"FP32","shape":[-1,8],"data":[1,2,3,4,5,6,7,8]}]`), 400},
		{"no shape", inferPath, mlpRequest(`[{"name":"X","datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]`), 400},
		{"huge shape, little data", inferPath, mlpRequest(`[{"name":"X","datatype":"FP32","shape":[1099511627776,8],"data":[1,2,3,4,5,6,7,8]}]`), 400},
		{"shape beyond int64", inferPath, mlpRequest(`[{"name":"X","datatype":"FP32","shape":[9223372036854775807,8],"data":[1]}]`), 400},
		{"too few elements", inferPath, mlpRequest(`[{"name":"X","datatype":"FP32","shape":[2,8],"data":[1,2,3,4,5,6,7,8]}]`), 400},
		{"too many elements", inferPath, mlpRequest(`[{"name":"X","datatype":"FP32","shape":[1,8],"data":[1,2,3,4,5,6,7,8,9]}]`), 400},
		{"too many elements, nested", inferPath, mlpRequest(`[{"name":"X","datatype":"FP32","shape":[1,8],"data":[[1,2,3,4],[5,6,7,8],[9]]}]`), 400},
		{"empty data", inferPath, mlpRequest(`[{"name":"X","datatype":"FP32","shape":[1,8],"data":[]}]`), 400},
		{"no data", inferPath, mlpRequest(`[{"name":"X","datatype":"FP32","shape":[1,8]}]`), 400},
		{"null data", inferPath, mlpRequest(`[{"name":"X","datatype":"FP32","shape":[1,8],"data":null}]`), 400},
		{"object in data", inferPath, mlpRequest(`[{"name":"X","datatype":"FP32","shape":[1,8],"data":[1,2,3,4,5,6,7,{"v":8}]}]`), 400},
		{"data is an object", inferPath, mlpRequest(`[{"name":"X","datatype":"FP32","shape":[1,8],"data":{"v":8}}]`), 400},
		{"boolean in FP32 data", inferPath, mlpRequest(`[{"name":"X","datatype":"FP32","shape":[1,8],"data":[1,2,3,4,5,6,7,true]}]`), 400},
		{"string in data", inferPath, mlpRequest(`[{"name":"X","datatype":"FP32","shape":[1,8],"data":[1,2,3,4,5,6,7,"8"]}]`), 400},
		{"null in data", inferPath, mlpRequest(`[{"name":"X","datatype":"FP32","shape":[1,8],"data":[1,2,3,4,5,6,7,null]}]`), 400},
		{"number beyond float64", inferPath, mlpRequest(`[{"name":"X","datatype":"FP32","shape":[1,8],"data":[1,2,3,4,5,6,7,1e999]}]`), 400},
		{"number beyond float32", inferPath, mlpRequest(`[{"name":"X","datatype":"FP32","shape":[1,8],"data":[1,2,3,4,5,6,7,1e39]}]`), 400},
		{"missing input", inferPath, mlpRequest(`[]`), 400},
		{"no inputs at all", inferPath, `{}`, 400},
		{"null body", inferPath, `null`, 400},
		{"unknown input", inferPath, mlpRequest("[" + goodX + `,{"name":"Z","datatype":"FP32","shape":[1,8],"data":[1,2,3,4,5,6,7,8]}]`), 400},
		{"duplicated input", inferPath, mlpRequest("[" + goodX + "," + goodX + "]"), 400},
		{"exposed weight as input", inferPath, mlpRequest("[" + goodX + `,{"name":"W2","datatype":"FP32","shape":[16,4],"data":` + `[` + strings.Repeat(`0,`, 63) + `0]}]`), 400},
		{"unknown output", inferPath, mlpRequest("["+goodX+"]", `"outputs":[{"name":"Z"}]`), 400},
		{"malformed JSON", inferPath, `{"inputs":[`, 400},
		{"not JSON", inferPath, `inputs=X`, 400},
		{"empty body", inferPath, ``, 400},
		{"inputs not an array", inferPath, `{"inputs":{"name":"X"}}`, 400},
		{"trailing garbage", inferPath, mlpRequest("["+goodX+"]") + ` xyz`, 400},
		{"trailing second object", inferPath, mlpRequest("["+goodX+"]") + `{}`, 400},
		{"trailing brace", inferPath, mlpRequest("["+goodX+"]") + `}`, 400},
		{"trailing bracket", inferPath, mlpRequest("["+goodX+"]") + `]`, 400},
		{"oversize body", inferPath, mlpRequest(`[{"name":"X","datatype":"FP32","shape":[1,8],"data":` + huge + `}]`), 413},
		{"oversize body of spaces", inferPath, mlpRequest("["+goodX+"]") + strings.Repeat(" ", 5000), 413},
		{"wrong model name", "/v2/models/nope/infer", mlpRequest("[" + goodX + "]"), 404},
		{"model name with a suffix", "/v2/models/" + mlpName + "x/infer", mlpRequest("[" + goodX + "]"), 404},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before, libBefore := srv.Scheduler().Stats(), lib.Stats()
			checkRefused(t, ts.URL, c)
			after, libAfter := srv.Scheduler().Stats(), lib.Stats()
			if after.Submitted != before.Submitted || after.Switches != before.Switches || after.Runs != before.Runs {
				t.Errorf("the bad request reached the scheduler: %+v -> %+v", before, after)
			}
			if libAfter.InUse != libBefore.InUse {
				t.Errorf("the bad request left adapters held: %d in use, was %d", libAfter.InUse, libBefore.InUse)
			}
			if d := bitDiff(infer(t, ts.URL, "a", x0), want); d != "" {
				t.Errorf("after the bad request, a good one: %s", d)
			}
			if st := srv.Scheduler().Stats(); st.Switches != before.Switches || !st.ActiveKnown || st.Active != active {
				t.Errorf("the good request after the bad one switched: %+v", st)
			}
		})
	}
	// An alpha that makes a weight infinite (the session checks finite
	// results) is only found when the configuration is applied: the
	// switch fails (a 422), the session keeps its weights (Set is
	// transactional), and the next request switches back.
	before := srv.Scheduler().Stats()
	checkRefused(t, ts.URL, badCase{"alpha that overflows a weight", inferPath, string(inferBody("a@3e38", x0)), 422})
	if st := srv.Scheduler().Stats(); st.SwitchErrors != before.SwitchErrors+1 || st.Runs != before.Runs {
		t.Errorf("overflowing alpha: stats %+v -> %+v, want one failed switch and no Run", before, st)
	}
	if d := bitDiff(infer(t, ts.URL, "a", x0), want); d != "" {
		t.Errorf("after the overflowing alpha: %s", d)
	}
	if d := bitDiff(infer(t, ts.URL, "", x0), f.want(t, "", ort.ModePacked, x0)); d != "" {
		t.Errorf("base after the overflowing alpha: %s", d)
	}

	// Every refused request was counted by code in the metrics too.
	metrics := scrape(t, ts.URL)
	for _, code := range []string{"400", "404", "413", "422"} {
		if metrics.value(`shira_requests_total{code="`+code+`",endpoint="infer"}`) == 0 {
			t.Errorf("no %s counted in shira_requests_total", code)
		}
	}
}

func writeTemp(t testing.TB, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "file.shira")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCompletionsBadInput sends bad completion requests to the text
// generator: each gets a 4xx and changes nothing.
func TestCompletionsBadInput(t *testing.T) {
	f := newCharlm(t)
	srv, base, lib := f.server(t, serve.Options{MaxTokens: 50, MaxBodyBytes: 2048})
	style := charlm.Styles()[0]
	good := completionBody(style, "Hi", 10, 0, 1, false)
	want := complete(t, base, good).Choices[0].Text
	path := "/v1/completions"
	req := func(fields string) string { return `{"model":"` + style + `","prompt":"Hi"` + fields + `}` }
	cases := []badCase{
		{"max_tokens 0", path, req(`,"max_tokens":0`), 400},
		{"max_tokens negative", path, req(`,"max_tokens":-1`), 400},
		{"max_tokens above the limit", path, req(`,"max_tokens":51`), 400},
		{"max_tokens huge", path, req(`,"max_tokens":1e12`), 400},
		{"max_tokens fractional", path, req(`,"max_tokens":1.5`), 400},
		{"n 2", path, req(`,"n":2`), 400},
		{"n 0", path, req(`,"n":0`), 400},
		{"temperature negative", path, req(`,"temperature":-0.5`), 400},
		{"temperature huge", path, req(`,"temperature":1000`), 400},
		{"top_k negative", path, req(`,"top_k":-1`), 400},
		{"seed negative", path, req(`,"seed":-1`), 400},
		{"stop too many", path, req(`,"stop":["a","b","c","d","e"]`), 400},
		{"stop empty", path, req(`,"stop":[""]`), 400},
		{"stop a number", path, req(`,"stop":5`), 400},
		{"prompt missing", path, `{"model":"` + style + `"}`, 400},
		{"prompt a number", path, `{"model":"` + style + `","prompt":5}`, 400},
		{"prompt two strings", path, `{"model":"` + style + `","prompt":["a","b"]}`, 400},
		{"model missing", path, `{"prompt":"Hi"}`, 400},
		{"model unknown", path, `{"model":"nope","prompt":"Hi"}`, 404},
		{"model with bad alpha", path, `{"model":"` + style + `@NaN","prompt":"Hi"}`, 400},
		{"streaming, bad max_tokens", path, req(`,"stream":true,"max_tokens":0`), 400},
		{"streaming, unknown model", path, `{"model":"nope","prompt":"Hi","stream":true}`, 404},
		{"malformed JSON", path, `{"model":`, 400},
		{"trailing garbage", path, req(``) + `x`, 400},
		{"oversize body", path, req(`,"suffix":"` + strings.Repeat("x", 3000) + `"`), 413},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before, libBefore := srv.Scheduler().Stats(), lib.Stats()
			checkRefused(t, base, c)
			after := srv.Scheduler().Stats()
			if after.Submitted != before.Submitted || after.Switches != before.Switches {
				t.Errorf("the bad request reached the scheduler: %+v -> %+v", before, after)
			}
			if l := lib.Stats(); l.InUse != libBefore.InUse {
				t.Errorf("adapters held: %d, was %d", l.InUse, libBefore.InUse)
			}
			if got := complete(t, base, good).Choices[0].Text; got != want {
				t.Errorf("after the bad request: %q, want %q", got, want)
			}
			if st := srv.Scheduler().Stats(); st.Switches != before.Switches {
				t.Errorf("the good request after the bad one switched: %+v", st)
			}
		})
	}
}

// echo is an Engine over a backend that returns its inputs, to test the
// datatypes the MLP does not take: every input comes back as the output of
// the same name, and "d" (FP64) also as "dn" with 0 turned into NaN.
func echoEngine() *serve.Engine {
	ins := []ort.IOInfo{
		{Name: "i8", DType: tensor.Int8, Shape: []int64{-1}},
		{Name: "u8", DType: tensor.Uint8, Shape: []int64{-1}},
		{Name: "i32", DType: tensor.Int32, Shape: []int64{-1}},
		{Name: "i64", DType: tensor.Int64, Shape: []int64{-1}},
		{Name: "b", DType: tensor.Bool, Shape: []int64{-1}},
		{Name: "h", DType: tensor.Float16, Shape: []int64{-1}},
		{Name: "d", DType: tensor.Float64, Shape: []int64{-1}},
	}
	outs := append(append([]ort.IOInfo(nil), ins...), ort.IOInfo{Name: "dn", DType: tensor.Float64, Shape: []int64{-1}})
	return &serve.Engine{Inputs: ins, Outputs: outs, Backend: echoBackend{}, Catalog: newFakeCatalog(), Platform: "echo"}
}

type echoBackend struct{}

func (echoBackend) Switch(context.Context, sched.Key) error { return nil }

func (echoBackend) Run(_ context.Context, _ sched.Key, in map[string]*tensor.Tensor) (map[string]*tensor.Tensor, error) {
	out := map[string]*tensor.Tensor{}
	for k, v := range in {
		out[k] = v
	}
	d := bytes.Clone(in["d"].Data)
	for i := 0; i+8 <= len(d); i += 8 {
		if binary.LittleEndian.Uint64(d[i:]) == 0 {
			binary.LittleEndian.PutUint64(d[i:], math.Float64bits(math.NaN()))
		}
	}
	out["dn"] = &tensor.Tensor{DType: tensor.Float64, Shape: in["d"].Shape, Data: d}
	return out, nil
}

// fakeCatalog offers adapters by name without files: "bad" fails
// validation.
type fakeCatalog struct {
	mu      sync.Mutex
	names   map[string]float32
	held    map[string]int
	panicOn string // Acquire panics on this name
}

func newFakeCatalog() *fakeCatalog {
	return &fakeCatalog{names: map[string]float32{"p": 1, "bad": 1}, held: map[string]int{}}
}

func (c *fakeCatalog) Acquire(_ context.Context, name string) (float32, func(), error) {
	if name != "" && name == c.panicOn {
		panic("test catalog panics on " + name)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	alpha, ok := c.names[name]
	if !ok {
		return 0, nil, fmt.Errorf("%w: %q", registry.ErrNotFound, name)
	}
	if name == "bad" {
		return 0, nil, fmt.Errorf("%w: checksum", registry.ErrInvalidAdapter)
	}
	c.held[name]++
	var once sync.Once
	return alpha, func() {
		once.Do(func() {
			c.mu.Lock()
			c.held[name]--
			c.mu.Unlock()
		})
	}, nil
}

func (c *fakeCatalog) heldCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.held {
		n += v
	}
	return n
}

func (c *fakeCatalog) List() []serve.AdapterInfo {
	return []serve.AdapterInfo{{Name: "bad"}, {Name: "p"}}
}

func (c *fakeCatalog) Load(context.Context, string, string) error {
	return fmt.Errorf("%w: the fake catalog loads nothing", registry.ErrInvalidAdapter)
}

func (c *fakeCatalog) Unload(name string) error {
	return fmt.Errorf("%w: %q (the fake catalog unloads nothing)", registry.ErrNotFound, name)
}

// echoRequest is a valid request to the echo engine with the JSON data of
// some inputs replaced.
func echoRequest(over map[string]string) string {
	data := map[string]string{"i8": "[-128,127]", "u8": "[0,255]", "i32": "[-2147483648,2147483647]",
		"i64": "[-9007199254740991,9007199254740991]", "b": "[true,0]", "h": "[65504,-0.5]", "d": "[0,1.5]"}
	types := map[string]string{"i8": "INT8", "u8": "UINT8", "i32": "INT32", "i64": "INT64", "b": "BOOL", "h": "FP16", "d": "FP64"}
	var parts []string
	for _, n := range []string{"i8", "u8", "i32", "i64", "b", "h", "d"} {
		d := data[n]
		if o, ok := over[n]; ok {
			d = o
		}
		parts = append(parts, fmt.Sprintf(`{"name":%q,"datatype":%q,"shape":[2],"data":%s}`, n, types[n], d))
	}
	return `{"inputs":[` + strings.Join(parts, ",") + `]}`
}

// TestInferDatatypes checks the integer, boolean and half-precision inputs
// on an engine that echoes them: values in range come back exactly (and
// an FP64 NaN output as null); values the datatype cannot hold are 400s.
func TestInferDatatypes(t *testing.T) {
	eng := echoEngine()
	srv, ts := newServer(t, serve.Options{Name: "echo", Engine: eng})
	inferPath := "/v2/models/echo/infer"
	code, body := post(t, ts.URL+inferPath, []byte(echoRequest(nil)))
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	var resp struct {
		Outputs []struct {
			Name     string          `json:"name"`
			Datatype string          `json:"datatype"`
			Data     json.RawMessage `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	got := map[string]string{}
	for _, o := range resp.Outputs {
		got[o.Name] = o.Datatype + " " + string(o.Data)
	}
	for name, want := range map[string]string{
		"i8": "INT8 [-128,127]", "u8": "UINT8 [0,255]", "i32": "INT32 [-2147483648,2147483647]",
		"i64": "INT64 [-9007199254740991,9007199254740991]", "b": "BOOL [1,0]", "h": "FP16 [65504,-0.5]",
		"d": "FP64 [0,1.5]", "dn": "FP64 [null,1.5]",
	} {
		if got[name] != want {
			t.Errorf("output %s: %q, want %q", name, got[name], want)
		}
	}
	bad := []struct {
		name, input, data string
	}{
		{"INT8 above range", "i8", "[128,0]"},
		{"INT8 below range", "i8", "[-129,0]"},
		{"INT8 fraction", "i8", "[1.5,0]"},
		{"UINT8 negative", "u8", "[-1,0]"},
		{"UINT8 above range", "u8", "[256,0]"},
		{"INT32 above range", "i32", "[2147483648,0]"},
		{"INT64 beyond 2^53", "i64", "[9007199254740993,0]"},
		{"INT64 at 2^53 (not exact)", "i64", "[9007199254740992,0]"},
		{"INT64 huge", "i64", "[1e300,0]"},
		{"BOOL 2", "b", "[2,0]"},
		{"BOOL fraction", "b", "[0.5,0]"},
		{"FP16 overflow", "h", "[70000,0]"},
		{"boolean in FP64", "d", "[true,0]"},
		{"boolean in INT64", "i64", "[false,0]"},
	}
	for _, c := range bad {
		before := srv.Scheduler().Stats()
		checkRefused(t, ts.URL, badCase{c.name, inferPath, echoRequest(map[string]string{c.input: c.data}), 400})
		if after := srv.Scheduler().Stats(); after.Submitted != before.Submitted {
			t.Errorf("%s: reached the scheduler", c.name)
		}
	}
	// Adapters of a Catalog: an invalid one is a 422, an unknown one a
	// 404, and neither stays held.
	withAdapter := func(spec string) string {
		r := echoRequest(nil)
		return r[:len(r)-1] + fmt.Sprintf(`,"parameters":{"adapter":%q}}`, spec)
	}
	checkRefused(t, ts.URL, badCase{"invalid adapter", inferPath, withAdapter("bad"), 422})
	checkRefused(t, ts.URL, badCase{"valid then invalid adapter", inferPath, withAdapter("p,bad"), 422})
	checkRefused(t, ts.URL, badCase{"valid then unknown adapter", inferPath, withAdapter("p@2,q"), 404})
	checkRefused(t, ts.URL, badCase{"valid then bad alpha", inferPath, withAdapter("p,p@x"), 400})
	if code, body := post(t, ts.URL+inferPath, []byte(withAdapter("p@2"))); code != 200 {
		t.Errorf("adapter p@2: %d %s", code, body)
	}
	if n := eng.Catalog.(*fakeCatalog).heldCount(); n != 0 {
		t.Errorf("%d adapters still held after the requests", n)
	}
}
