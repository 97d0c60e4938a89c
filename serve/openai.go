package serve

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/shira-ort/shira-ort/internal/textgen"
)

// The OpenAI-style API of multi-LoRA servers: GET /v1/models lists the
// base model and every adapter; POST /v1/completions generates text, its
// "model" field naming the base model, an adapter, or a configuration
// "name[@alpha],..."; "stream": true answers with server-sent events.

type modelCard struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
	Parent  string `json:"parent,omitempty"`
	Root    string `json:"root,omitempty"`
}

func (s *Server) listModels(w http.ResponseWriter, _ *http.Request) error {
	created := s.started.Unix()
	data := []modelCard{{ID: s.o.Name, Object: "model", Created: created, OwnedBy: "shira-ort", Root: s.o.Name}}
	for _, a := range s.eng.Catalog.List() {
		data = append(data, modelCard{ID: a.Name, Object: "model", Created: created, OwnedBy: "shira-ort", Parent: s.o.Name, Root: s.o.Name})
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
	return nil
}

type completionRequest struct {
	Model       string          `json:"model"`
	Prompt      json.RawMessage `json:"prompt"`
	MaxTokens   *int            `json:"max_tokens"`
	Temperature *float64        `json:"temperature"`
	TopK        int             `json:"top_k"`
	Seed        *uint64         `json:"seed"`
	Stream      bool            `json:"stream"`
	N           *int            `json:"n"`
	Stop        json.RawMessage `json:"stop"`
}

type completionChoice struct {
	Index        int     `json:"index"`
	Text         string  `json:"text"`
	FinishReason *string `json:"finish_reason"`
	Logprobs     any     `json:"logprobs"`
}

type completionResponse struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"`
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []completionChoice `json:"choices"`
	Usage   *usage             `json:"usage,omitempty"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// errStop ends generation at a stop string.
var errStop = errors.New("stop")

// completion is a validated completion request.
type completion struct {
	prompt    string
	maxTokens int
	sample    textgen.SampleOptions
	stop      []string
	stream    bool
}

func (s *Server) parseCompletion(req *completionRequest) (*completion, error) {
	c := &completion{maxTokens: 16, sample: textgen.SampleOptions{Temperature: 1, TopK: req.TopK}, stream: req.Stream}
	if req.Model == "" {
		return nil, fmt.Errorf("%w: \"model\" is required (%q for the base model, or an adapter's name)", ErrBadRequest, s.o.Name)
	}
	if len(req.Prompt) == 0 {
		return nil, fmt.Errorf("%w: \"prompt\" is required", ErrBadRequest)
	}
	if err := json.Unmarshal(req.Prompt, &c.prompt); err != nil {
		var ps []string
		if json.Unmarshal(req.Prompt, &ps) != nil || len(ps) != 1 {
			return nil, fmt.Errorf("%w: \"prompt\" must be a string (or an array of one string)", ErrBadRequest)
		}
		c.prompt = ps[0]
	}
	if !utf8.ValidString(c.prompt) {
		return nil, fmt.Errorf("%w: \"prompt\" is not valid UTF-8", ErrBadRequest)
	}
	if req.MaxTokens != nil {
		c.maxTokens = *req.MaxTokens
	}
	if c.maxTokens < 1 || c.maxTokens > s.o.MaxTokens {
		return nil, fmt.Errorf("%w: \"max_tokens\" %d out of range [1, %d]", ErrBadRequest, c.maxTokens, s.o.MaxTokens)
	}
	if req.Temperature != nil {
		c.sample.Temperature = *req.Temperature
	}
	if c.sample.Temperature < 0 || c.sample.Temperature > 100 {
		return nil, fmt.Errorf("%w: \"temperature\" %v out of range [0, 100]", ErrBadRequest, c.sample.Temperature)
	}
	if c.sample.TopK < 0 {
		return nil, fmt.Errorf("%w: \"top_k\" %d is negative", ErrBadRequest, c.sample.TopK)
	}
	if req.N != nil && *req.N != 1 {
		return nil, fmt.Errorf("%w: \"n\" must be 1", ErrBadRequest)
	}
	if req.Seed != nil {
		c.sample.Seed = *req.Seed
	} else {
		c.sample.Seed = rand.Uint64()
	}
	if len(req.Stop) > 0 && string(req.Stop) != "null" {
		var one string
		if json.Unmarshal(req.Stop, &one) == nil {
			c.stop = []string{one}
		} else if json.Unmarshal(req.Stop, &c.stop) != nil {
			return nil, fmt.Errorf("%w: \"stop\" must be a string or an array of strings", ErrBadRequest)
		}
		if len(c.stop) > 4 {
			return nil, fmt.Errorf("%w: at most 4 stop strings", ErrBadRequest)
		}
		for _, st := range c.stop {
			if st == "" {
				return nil, fmt.Errorf("%w: empty stop string", ErrBadRequest)
			}
		}
	}
	return c, nil
}

// completions is POST /v1/completions.
func (s *Server) completions(w http.ResponseWriter, r *http.Request) error {
	var req completionRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	c, err := s.parseCompletion(&req)
	if err != nil {
		return err
	}
	adm, err := s.admit(r.Context(), req.Model)
	if err != nil {
		return err
	}
	defer adm.release()
	// The steps of this generation follow one another: the scheduler
	// keeps the configuration active for them while no other request has
	// waited MaxWait, instead of switching after every step, and starts
	// generations for one configuration together (sched.Stream).
	st := s.sched.Stream(adm.key)
	defer st.Close()
	m := &textgen.Model{R: st, Vocab: s.o.Text}
	resp := completionResponse{
		ID: fmt.Sprintf("cmpl-%d-%s", s.started.UnixNano(), requestID(r.Context())), Object: "text_completion",
		Created: time.Now().Unix(), Model: req.Model,
	}
	promptTokens := len(s.o.Text.Encode(c.prompt))
	var text strings.Builder
	var flusher http.Flusher
	if c.stream {
		f, ok := w.(http.Flusher)
		if !ok {
			return fmt.Errorf("serve: streaming is not supported by this connection")
		}
		flusher = f
	}
	started := false
	n := 0
	sent := 0 // bytes of text streamed so far
	send := func(chunkText string) error {
		if !started {
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-cache")
			w.WriteHeader(http.StatusOK)
			started = true
		}
		chunk := resp
		chunk.Choices = []completionChoice{{Text: chunkText}}
		if err := writeEvent(w, chunk); err != nil {
			return err
		}
		flusher.Flush()
		return nil
	}
	emit := func(tok string) error {
		n++
		s.m.tokens.Inc()
		text.WriteString(tok)
		cur := text.String()
		for _, st := range c.stop {
			if strings.HasSuffix(cur, st) {
				return errStop
			}
		}
		if c.stream {
			// Stream what no stop string can still claim: text that
			// may be the start of a stop string is held back until
			// the next characters decide.
			if upto := len(cur) - stopPrefix(cur, c.stop); upto > sent {
				if err := send(cur[sent:upto]); err != nil {
					return err
				}
				sent = upto
			}
		}
		return nil
	}
	_, err = m.Generate(r.Context(), c.prompt, c.maxTokens, c.sample, emit)
	finish := "length"
	out := text.String()
	if errors.Is(err, errStop) {
		err, finish = nil, "stop"
		for _, st := range c.stop {
			if strings.HasSuffix(out, st) {
				out = strings.TrimSuffix(out, st)
				break
			}
		}
	}
	if c.stream && err == nil && len(out) > sent {
		// The text held back that turned out not to start a stop string.
		if err := send(out[sent:]); err != nil {
			return err
		}
	}
	u := &usage{PromptTokens: promptTokens, CompletionTokens: n, TotalTokens: promptTokens + n}
	if !c.stream {
		if err != nil {
			return err
		}
		resp.Choices = []completionChoice{{Text: out, FinishReason: &finish}}
		resp.Usage = u
		writeJSON(w, http.StatusOK, resp)
		return nil
	}
	if err != nil && !started {
		return err // nothing sent yet: an ordinary error response
	}
	if !started {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
	}
	if err != nil {
		// The status line is gone: the error travels as an event.
		_ = writeEvent(w, map[string]any{"error": map[string]any{"message": err.Error(), "code": status(err)}})
		_, _ = fmt.Fprint(w, "data: [DONE]\n\n")
		flusher.Flush()
		return err
	}
	last := resp
	last.Choices = []completionChoice{{Text: "", FinishReason: &finish}}
	last.Usage = u
	if err := writeEvent(w, last); err != nil {
		return err
	}
	_, err = fmt.Fprint(w, "data: [DONE]\n\n")
	flusher.Flush()
	return err
}

// stopPrefix returns the length of the longest suffix of text that is a
// proper prefix of one of the stop strings (0 if none).
func stopPrefix(text string, stops []string) int {
	longest := 0
	for _, st := range stops {
		for k := min(len(st)-1, len(text)); k > longest; k-- {
			if strings.HasSuffix(text, st[:k]) {
				longest = k
				break
			}
		}
	}
	return longest
}

// writeEvent writes v as one server-sent event.
func writeEvent(w http.ResponseWriter, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "data: %s\n\n", b)
	return err
}
