package serve_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/demo/charlm"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/internal/textgen"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/registry"
	"github.com/shira-ort/shira-ort/sched"
	"github.com/shira-ort/shira-ort/serve"
)

// charlmFixture is the shipped text generator with its style adapters.
type charlmFixture struct {
	ws    *charlm.Workspace
	vocab *textgen.Vocab
}

func newCharlm(t testing.TB) *charlmFixture {
	t.Helper()
	orttest.Require(t)
	ws, err := charlm.Prepare(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	v, err := textgen.LoadVocab(ws.Vocab)
	if err != nil {
		t.Fatal(err)
	}
	return &charlmFixture{ws: ws, vocab: v}
}

// server serves the text generator with every style adapter.
func (f *charlmFixture) server(t testing.TB, o serve.Options) (*serve.Server, string, *registry.Library) {
	t.Helper()
	lib := newLibrary(t, f.ws.Model, f.ws.Shira)
	sess := openSession(t, f.ws.Model, ort.ModePacked)
	if o.Name == "" {
		o.Name = "charlm"
	}
	o.Engine = serve.ShiraEngine(sess, lib)
	o.Text = f.vocab
	srv, ts := newServer(t, o)
	return srv, ts.URL, lib
}

// generate is the reference: textgen on a session of its own with the
// adapters Set directly.
func (f *charlmFixture) generate(t testing.TB, sess *ort.Session, cfgs []patch.Config, prompt string, n int, o textgen.SampleOptions) string {
	t.Helper()
	if err := sess.Set(t.Context(), cfgs...); err != nil {
		t.Fatal(err)
	}
	m := &textgen.Model{R: sess, Vocab: f.vocab}
	out, err := m.Generate(t.Context(), prompt, n, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (f *charlmFixture) open(t testing.TB, style string) *adapter.Adapter {
	t.Helper()
	a, err := adapter.Open(f.ws.Shira[style])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

type completion struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Index        int     `json:"index"`
		Text         string  `json:"text"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
	Error any `json:"error"`
}

func completionBody(model, prompt string, maxTokens int, temperature float64, seed uint64, stream bool, stop ...string) []byte {
	req := map[string]any{"model": model, "prompt": prompt, "max_tokens": maxTokens, "temperature": temperature,
		"seed": seed, "stream": stream}
	if len(stop) > 0 {
		req["stop"] = stop
	}
	b, _ := json.Marshal(req)
	return b
}

// complete posts a non-streaming completion and decodes it.
func complete(t testing.TB, base string, body []byte) completion {
	t.Helper()
	code, b := post(t, base+"/v1/completions", body)
	if code != http.StatusOK {
		t.Fatalf("completion %s: status %d: %s", body, code, b)
	}
	var c completion
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("completion %s: %v", b, err)
	}
	if len(c.Choices) != 1 || c.Choices[0].FinishReason == nil || c.Usage == nil {
		t.Fatalf("completion without one finished choice and usage: %s", b)
	}
	return c
}

// configs opens the style adapters of a "style[@alpha],..." specification.
func (f *charlmFixture) configs(t testing.TB, spec string) []patch.Config {
	t.Helper()
	return parseConfigs(t, spec, func(name string) *adapter.Adapter { return f.open(t, name) })
}

// decodeCompletion returns the text of a non-streaming completion.
func decodeCompletion(t testing.TB, body []byte) string {
	t.Helper()
	var c completion
	if err := json.Unmarshal(body, &c); err != nil || len(c.Choices) != 1 {
		t.Fatalf("completion %s: %v", body, err)
	}
	return c.Choices[0].Text
}

// streamNoFatal is stream for goroutines: the chunks' texts and whether
// [DONE] ended the stream (nil texts on any error); first, when not nil,
// is closed at the first chunk.
func streamNoFatal(base string, body []byte, first chan struct{}) (texts []string, last completion, done bool) {
	resp, err := http.Post(base+"/v1/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, last, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, last, false
	}
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
		var c completion
		if json.Unmarshal([]byte(data), &c) != nil || c.Error != nil || len(c.Choices) != 1 {
			return nil, last, false
		}
		if c.Choices[0].FinishReason != nil {
			last = c
			continue
		}
		texts = append(texts, c.Choices[0].Text)
		if first != nil && len(texts) == 1 {
			close(first)
		}
	}
	return texts, last, done
}

// stream posts a streaming completion and returns the chunks' texts, the
// last chunk (finish_reason and usage), and whether "data: [DONE]" ended
// the stream.
func stream(t testing.TB, base string, body []byte) (texts []string, last completion, done bool) {
	t.Helper()
	resp, err := http.Post(base+"/v1/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("streaming completion: status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q, want text/event-stream", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	var events []completion
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("not an SSE data line: %q", line)
		}
		if done {
			t.Fatalf("event after [DONE]: %q", line)
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		var c completion
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("event %q: %v", data, err)
		}
		if c.Error != nil {
			t.Fatalf("error event: %s", data)
		}
		events = append(events, c)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(events) == 0 {
		t.Fatal("no events")
	}
	for i, e := range events {
		if len(e.Choices) != 1 {
			t.Fatalf("event %d has %d choices", i, len(e.Choices))
		}
		if i < len(events)-1 {
			if e.Choices[0].FinishReason != nil || e.Usage != nil {
				t.Errorf("event %d of %d has a finish reason or usage", i, len(events))
			}
			texts = append(texts, e.Choices[0].Text)
		}
	}
	last = events[len(events)-1]
	if last.Choices[0].FinishReason == nil || last.Usage == nil || last.Choices[0].Text != "" {
		t.Errorf("last event: %+v, want an empty text with finish_reason and usage", last)
	}
	return texts, last, done
}

// TestCompletions checks the OpenAI-style endpoint against textgen on a
// session with the adapters Set directly: the same seed and sampling
// options give the same text without and with streaming; stop strings
// end the text before them, in both; "model" names the base model, an
// adapter or a configuration, and an unknown one is a 404.
func TestCompletions(t *testing.T) {
	f := newCharlm(t)
	srv, base, _ := f.server(t, serve.Options{})
	ref := openSession(t, f.ws.Model, ort.ModePacked)
	styles := charlm.Styles()
	if len(styles) < 2 {
		t.Fatalf("styles %v", styles)
	}
	a, b := f.open(t, styles[0]), f.open(t, styles[1])
	const prompt = "The "
	sample := textgen.SampleOptions{Temperature: 0.8, Seed: 7}
	cases := []struct {
		model string
		cfgs  []patch.Config
	}{
		{"charlm", nil},
		{styles[0], []patch.Config{patch.Default(a)}},
		{styles[1] + "@0.5", []patch.Config{{Adapter: b, Alpha: 0.5}}},
		{styles[0] + "," + styles[1], []patch.Config{patch.Default(a), patch.Default(b)}},
	}
	const n = 40
	texts := map[string]string{}
	for _, c := range cases {
		want := f.generate(t, ref, c.cfgs, prompt, n, sample)
		texts[c.model] = want
		got := complete(t, base, completionBody(c.model, prompt, n, sample.Temperature, sample.Seed, false))
		if got.Choices[0].Text != want {
			t.Errorf("model %q: %q, want %q (textgen with the adapters Set)", c.model, got.Choices[0].Text, want)
		}
		if got.Model != c.model || got.Object != "text_completion" || *got.Choices[0].FinishReason != "length" {
			t.Errorf("model %q: response model %q object %q finish %q", c.model, got.Model, got.Object, *got.Choices[0].FinishReason)
		}
		if u := got.Usage; u.PromptTokens != len(prompt) || u.CompletionTokens != n || u.TotalTokens != len(prompt)+n {
			t.Errorf("model %q: usage %+v", c.model, *u)
		}
		chunks, last, done := stream(t, base, completionBody(c.model, prompt, n, sample.Temperature, sample.Seed, true))
		if !done {
			t.Errorf("model %q: the stream did not end with data: [DONE]", c.model)
		}
		if len(chunks) != n || strings.Join(chunks, "") != want {
			t.Errorf("model %q: streamed %d chunks %q, want %d characters %q", c.model, len(chunks), strings.Join(chunks, ""), n, want)
		}
		if *last.Choices[0].FinishReason != "length" || last.Usage.CompletionTokens != n || last.Usage.PromptTokens != len(prompt) {
			t.Errorf("model %q: last chunk %+v", c.model, last)
		}
	}
	if texts["charlm"] == texts[styles[0]] {
		t.Errorf("the adapter did not change the text: %q", texts["charlm"])
	}

	// Stop strings: the text ends before the first occurrence, without
	// and with streaming (nothing of the stop string is streamed either).
	want := texts[styles[0]]
	for _, stop := range stopCandidates(want) {
		i := strings.Index(want, stop)
		got := complete(t, base, completionBody(styles[0], prompt, n, sample.Temperature, sample.Seed, false, stop, "\x00never"))
		if got.Choices[0].Text != want[:i] || *got.Choices[0].FinishReason != "stop" {
			t.Errorf("stop %q: %q (finish %q), want %q (stop)", stop, got.Choices[0].Text, *got.Choices[0].FinishReason, want[:i])
		}
		if tok := utf8.RuneCountInString(want[:i+len(stop)]); got.Usage.CompletionTokens != tok {
			t.Errorf("stop %q: %d completion tokens, want %d", stop, got.Usage.CompletionTokens, tok)
		}
		chunks, last, done := stream(t, base, completionBody(styles[0], prompt, n, sample.Temperature, sample.Seed, true, stop))
		if s := strings.Join(chunks, ""); s != want[:i] || !done || *last.Choices[0].FinishReason != "stop" {
			t.Errorf("stop %q, streaming: %q (finish %q, done %v), want %q (stop)", stop, s, *last.Choices[0].FinishReason, done, want[:i])
		}
	}

	// Two stop strings: the character before the first stop starts the
	// other one, so it is held back from the stream, and must still be
	// sent when the first one ends the text.
	if r := []rune(want); len(r) > 2 {
		p := 1
		for p < len(r)-1 && strings.IndexRune(want, r[p]) != len(string(r[:p])) {
			p++
		}
		i := len(string(r[:p]))
		stops := []string{string(r[p]), string(r[p-1]) + "\x01"}
		if strings.Index(want, stops[0]) == i {
			chunks, last, _ := stream(t, base, completionBody(styles[0], prompt, n, sample.Temperature, sample.Seed, true, stops...))
			if s := strings.Join(chunks, ""); s != want[:i] || *last.Choices[0].FinishReason != "stop" {
				t.Errorf("stops %q, streaming: %q, want %q", stops, s, want[:i])
			}
		}
	}

	// Unknown model: 404, nothing run.
	before := srv.Scheduler().Stats()
	for _, m := range []string{"nope", styles[0] + ",nope", "charlm2"} {
		code, body := post(t, base+"/v1/completions", completionBody(m, prompt, 5, 0, 1, false))
		if code != http.StatusNotFound || !strings.Contains(string(body), "error") {
			t.Errorf("model %q: status %d %s, want 404", m, code, body)
		}
		code, body = post(t, base+"/v1/completions", completionBody(m, prompt, 5, 0, 1, true))
		if code != http.StatusNotFound {
			t.Errorf("model %q, streaming: status %d %s, want 404", m, code, body)
		}
	}
	if after := srv.Scheduler().Stats(); after.Submitted != before.Submitted || after.Switches != before.Switches {
		t.Errorf("unknown models reached the scheduler: %+v -> %+v", before, after)
	}

	// GET /v1/models lists the base model and every adapter.
	code, body := get(t, base+"/v1/models")
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID     string `json:"id"`
			Parent string `json:"parent"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &list); code != 200 || err != nil {
		t.Fatalf("GET /v1/models: %d %s %v", code, body, err)
	}
	var ids []string
	for _, d := range list.Data {
		ids = append(ids, d.ID)
	}
	if wantIDs := append([]string{"charlm"}, styles...); !slices.Equal(ids, wantIDs) {
		t.Errorf("models %v, want %v", ids, wantIDs)
	}
}

// stopCandidates picks stop strings of one, two and three characters from
// text, none at its very start.
func stopCandidates(text string) []string {
	r := []rune(text)
	var out []string
	for _, l := range []int{1, 2, 3} {
		p := len(r) / 2
		if p+l > len(r) {
			continue
		}
		s := string(r[p : p+l])
		if strings.Index(text, s) > 0 {
			out = append(out, s)
		} else if s2 := string(r[len(r)-l:]); strings.Index(text, s2) > 0 {
			out = append(out, s2)
		}
	}
	return out
}

// TestCompletionsGreedy checks temperature 0 is argmax, whatever the seed.
func TestCompletionsGreedy(t *testing.T) {
	f := newCharlm(t)
	_, base, _ := f.server(t, serve.Options{})
	ref := openSession(t, f.ws.Model, ort.ModePacked)
	want := f.generate(t, ref, nil, "Hello", 20, textgen.SampleOptions{})
	for _, seed := range []uint64{1, 2} {
		got := complete(t, base, completionBody("charlm", "Hello", 20, 0, seed, false))
		if got.Choices[0].Text != want {
			t.Errorf("seed %d: %q, want %q", seed, got.Choices[0].Text, want)
		}
	}
	if v := scrape(t, base)["shira_generated_tokens_total"]; v != 40 {
		t.Errorf("shira_generated_tokens_total = %v, want 40", v)
	}
}

// TestCompletionsConcurrent runs completions for several configurations
// at once on a server that batches: steps of the same configuration and
// length share Runs, and every text still equals textgen's with the
// adapters Set directly.
func TestCompletionsConcurrent(t *testing.T) {
	f := newCharlm(t)
	srv, base, _ := f.server(t, serve.Options{Sched: sched.Options{MaxBatch: 8}})
	ref := openSession(t, f.ws.Model, ort.ModePacked)
	type job struct {
		model string
		seed  uint64
		want  string
	}
	var jobs []job
	for i, model := range []string{"charlm", "bofh", "bofh", "bofh@0.5", "legal", "legal", "bofh", "charlm"} {
		var cfgs []patch.Config
		if model != "charlm" {
			cfgs = f.configs(t, model)
		}
		seed := uint64(i % 3)
		jobs = append(jobs, job{model, seed, f.generate(t, ref, cfgs, "It ", 30, textgen.SampleOptions{Temperature: 0.9, Seed: seed})})
	}
	var wg sync.WaitGroup
	got := make([]string, len(jobs))
	codes := make([]int, len(jobs))
	for i, j := range jobs {
		wg.Go(func() {
			code, _, body, err := tryPost(t.Context(), base+"/v1/completions", completionBody(j.model, "It ", 30, 0.9, j.seed, false))
			codes[i] = code
			if err == nil && code == 200 {
				var c completion
				if json.Unmarshal(body, &c) == nil && len(c.Choices) == 1 {
					got[i] = c.Choices[0].Text
				}
			}
		})
	}
	wg.Wait()
	for i, j := range jobs {
		if codes[i] != 200 || got[i] != j.want {
			t.Errorf("%s seed %d: %d %q, want %q", j.model, j.seed, codes[i], got[i], j.want)
		}
	}
	st := srv.Scheduler().Stats()
	t.Logf("%d steps in %d Runs, %d switches", st.Completed, st.Runs, st.Switches)
	if st.Rows <= st.Runs {
		t.Logf("no step was batched (%+v)", st)
	}
}
