package serve_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/internal/textgen"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/sched"
	"github.com/shira-ort/shira-ort/serve"
	"github.com/shira-ort/shira-ort/tensor"
)

// cycleVocab is the vocabulary of cycleBackend.
var cycleVocab = func() *textgen.Vocab {
	v, err := textgen.ParseVocab([]byte(`{"chars":["a","b","c","d","\n"],"unk":4}`))
	if err != nil {
		panic(err)
	}
	return v
}()

// cycleBackend is a character model whose logits make the next token the
// last one plus one (mod 5: "abcd\nabcd\n..."), each Run taking delay.
type cycleBackend struct {
	mu    sync.Mutex
	delay time.Duration
	runs  int
}

func (b *cycleBackend) Switch(context.Context, sched.Key) error { return nil }

func (b *cycleBackend) Run(ctx context.Context, _ sched.Key, in map[string]*tensor.Tensor) (map[string]*tensor.Tensor, error) {
	b.mu.Lock()
	b.runs++
	delay := b.delay
	b.mu.Unlock()
	select {
	case <-time.After(delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	tok := in["tokens"]
	v := int64(cycleVocab.Size())
	seq := tok.Shape[1]
	logits := make([]float32, int(seq)*int(v))
	for p := range seq {
		id := int64(binary.LittleEndian.Uint64(tok.Data[8*p:]))
		logits[p*v+(id+1)%v] = 10
	}
	out, err := tensor.FromFloat32([]int64{1, seq, v}, logits)
	return map[string]*tensor.Tensor{"logits": out}, err
}

func (b *cycleBackend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.runs
}

func cycleServer(t *testing.T, delay, timeout time.Duration) (*serve.Server, string, *cycleBackend) {
	t.Helper()
	b := &cycleBackend{delay: delay}
	eng := &serve.Engine{
		Inputs:  []ort.IOInfo{{Name: "tokens", DType: tensor.Int64, Shape: []int64{1, -1}}},
		Outputs: []ort.IOInfo{{Name: "logits", DType: tensor.Float32, Shape: []int64{1, -1, 5}}},
		Backend: b, Catalog: newFakeCatalog(), Platform: "cycle",
	}
	srv, ts := newServer(t, serve.Options{Name: "cycle", Engine: eng, Text: cycleVocab, RequestTimeout: timeout})
	return srv, ts.URL, b
}

// TestCompletionsStreamEnds: a streaming completion that runs out of
// RequestTimeout after its first chunks ends with an error event (code
// 504) and [DONE]; without streaming it is a plain 504. A client that
// goes away mid-stream stops the generation.
func TestCompletionsStreamEnds(t *testing.T) {
	_, base, b := cycleServer(t, 20*time.Millisecond, 500*time.Millisecond)
	if got := complete(t, base, completionBody("cycle", "a", 6, 0, 1, false)).Choices[0].Text; got != "bcd\nab" {
		t.Fatalf("fake model: %q", got)
	}
	checkRefused(t, base, badCase{"timeout", "/v1/completions", string(completionBody("p", "a", 100, 0, 1, false)), 504})

	resp, err := http.Post(base+"/v1/completions", "application/json", bytes.NewReader(completionBody("p", "a", 100, 0, 1, true)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var text strings.Builder
	var errEvent map[string]any
	done := false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		var ev struct {
			completion
			Error map[string]any `json:"error"`
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatalf("%q: %v", data, err)
		}
		if ev.Error != nil {
			errEvent = ev.Error
			continue
		}
		if errEvent != nil {
			t.Errorf("chunk after the error event: %q", data)
		}
		if len(ev.Choices) == 1 {
			text.WriteString(ev.Choices[0].Text)
		}
	}
	if text.Len() == 0 || !strings.HasPrefix(strings.Repeat("bcd\na", 30), text.String()) {
		t.Errorf("streamed %q before the timeout", text.String())
	}
	if errEvent == nil || errEvent["code"] != float64(504) || !done {
		t.Errorf("error event %v, done %v: want code 504 and [DONE]", errEvent, done)
	}

	// A client that goes away mid-stream.
	b.mu.Lock()
	b.delay = 5 * time.Millisecond
	b.mu.Unlock()
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/completions", bytes.NewReader(completionBody("cycle", "a", 500, 0, 1, true)))
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(resp2.Body)
	if _, err := r.ReadString('\n'); err != nil { // the first chunk
		t.Fatal(err)
	}
	start := b.count()
	cancel()
	resp2.Body.Close()
	// The generation stops: the Runs stop growing long before the 500
	// tokens asked for (2.5 s of Runs).
	n := b.count()
	deadline := time.Now().Add(5 * time.Second)
	for {
		time.Sleep(50 * time.Millisecond)
		m := b.count()
		if m == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("generation goes on after the client left: %d Runs", m)
		}
		n = m
	}
	if n-start > 200 {
		t.Errorf("%d Runs after the client left", n-start)
	}
}

// TestMetadata checks the KServe health and metadata endpoints and the
// choice of outputs.
func TestMetadata(t *testing.T) {
	f := newMLP(t)
	_, ts, _, _ := f.server(t, ort.ModePacked, serve.Options{})
	for path, want := range map[string]int{
		"/v2/health/live": 200, "/v2/health/ready": 200, "/v2": 200, "/v2/models/" + mlpName: 200,
		"/v2/models/" + mlpName + "/ready": 200, "/v2/models/nope": 404, "/v2/models/nope/ready": 404,
	} {
		if code, body := get(t, ts.URL+path); code != want {
			t.Errorf("GET %s: %d %s, want %d", path, code, body, want)
		}
	}
	_, body := get(t, ts.URL+"/v2/models/"+mlpName)
	var meta struct {
		Name     string `json:"name"`
		Platform string `json:"platform"`
		Inputs   []struct {
			Name     string  `json:"name"`
			Datatype string  `json:"datatype"`
			Shape    []int64 `json:"shape"`
		} `json:"inputs"`
		Outputs []struct {
			Name     string  `json:"name"`
			Datatype string  `json:"datatype"`
			Shape    []int64 `json:"shape"`
		} `json:"outputs"`
		Parameters struct {
			Adapters []string `json:"adapters"`
		} `json:"parameters"`
	}
	if err := json.Unmarshal(body, &meta); err != nil {
		t.Fatal(err)
	}
	if meta.Name != mlpName || meta.Platform != "onnxruntime-shira-packed" || len(meta.Inputs) != 1 || meta.Inputs[0].Name != "X" ||
		meta.Inputs[0].Datatype != "FP32" || len(meta.Inputs[0].Shape) != 2 || meta.Inputs[0].Shape[0] != -1 || meta.Inputs[0].Shape[1] != 8 ||
		len(meta.Outputs) != 1 || meta.Outputs[0].Name != "Y" || strings.Join(meta.Parameters.Adapters, ",") != "a,b,c" {
		t.Errorf("metadata %s", body)
	}
	// Outputs named explicitly; data nested by rows.
	req := `{"inputs":[{"name":"X","datatype":"FP32","shape":[2,8],"data":[[1,2,3,4,5,6,7,8],[8,7,6,5,4,3,2,1]]}],"outputs":[{"name":"Y"}],"parameters":{"adapter":"a@0.5"}}`
	code, body := post(t, ts.URL+"/v2/models/"+mlpName+"/infer", []byte(req))
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	y, err := parseY(body, 2)
	if err != nil {
		t.Fatal(err)
	}
	if d := bitDiff(y, f.want(t, "a@0.5", ort.ModePacked, []float32{1, 2, 3, 4, 5, 6, 7, 8, 8, 7, 6, 5, 4, 3, 2, 1})); d != "" {
		t.Error(d)
	}
}

// TestNewOptions: New refuses what it cannot serve.
func TestNewOptions(t *testing.T) {
	fixed := &serve.Engine{
		Inputs:  []ort.IOInfo{{Name: "x", DType: tensor.Float32, Shape: []int64{1, 8}}},
		Outputs: []ort.IOInfo{{Name: "y", DType: tensor.Float32, Shape: []int64{1, 4}}},
		Backend: echoBackend{}, Catalog: newFakeCatalog(),
	}
	for name, o := range map[string]serve.Options{
		"no name":                      {Engine: echoEngine()},
		"no engine":                    {Name: "x"},
		"no backend":                   {Name: "x", Engine: &serve.Engine{Catalog: newFakeCatalog()}},
		"no catalog":                   {Name: "x", Engine: &serve.Engine{Backend: echoBackend{}}},
		"batching without a batch dim": {Name: "x", Engine: fixed, Sched: sched.Options{MaxBatch: 4}},
		"missing adapter root":         {Name: "x", Engine: echoEngine(), AdapterRoot: "/nonexistent/adapters"},
		"negative scheduler option":    {Name: "x", Engine: echoEngine(), Sched: sched.Options{QueueLimit: -1}},
	} {
		o.Logger = quiet
		if _, err := serve.New(o); err == nil {
			t.Errorf("%s: New accepted %+v", name, o)
		}
	}
	if !serve.Batchable(echoEngine()) || serve.Batchable(fixed) {
		t.Error("Batchable")
	}
}
