package serve_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"

	"github.com/shira-ort/shira-ort/internal/demo/charlm"
	"github.com/shira-ort/shira-ort/internal/textgen"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/registry"
	"github.com/shira-ort/shira-ort/serve"
)

// textGenerator prepares the shipped text generator in a temporary
// directory (the model exported, its style adapters as .shira files:
// bofh.shira, fortunes.shira, ...) and registers the adapters in a
// library; cleanup closes and removes everything.
func textGenerator(ctx context.Context) (*charlm.Workspace, *textgen.Vocab, *registry.Library, func()) {
	dir, err := os.MkdirTemp("", "serve-example")
	if err != nil {
		log.Fatal(err)
	}
	ws, err := charlm.Prepare(ctx, dir)
	if err != nil {
		log.Fatal(err)
	}
	vocab, err := textgen.LoadVocab(ws.Vocab)
	if err != nil {
		log.Fatal(err)
	}
	lib, err := registry.New(registry.Options{Model: ws.Model, CacheDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := lib.RegisterDir(ctx, dir); err != nil {
		log.Fatal(err)
	}
	return ws, vocab, lib, func() {
		lib.Close()
		ws.Close()
		os.RemoveAll(dir)
	}
}

// Serve the shipped text generator with its style adapters and ask for one
// completion in the "bofh" style. A seed with temperature 0 (greedy
// decoding) makes the text deterministic.
func ExampleNew() {
	if err := ort.Init(); err != nil {
		log.Fatal(err) // the message says to run `shira-ort setup`
	}
	ctx := context.Background()
	ws, vocab, lib, cleanup := textGenerator(ctx)
	defer cleanup()
	sess, err := ort.OpenExported(ctx, ws.Model, nil) // packed mode
	if err != nil {
		log.Fatal(err)
	}
	defer sess.Close()

	srv, err := serve.New(serve.Options{Name: "charlm", Engine: serve.ShiraEngine(sess, lib), Text: vocab,
		Logger: slog.New(slog.DiscardHandler)}) // one line per request otherwise
	if err != nil {
		log.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	defer srv.Close(ctx)

	resp, err := http.Post(ts.URL+"/v1/completions", "application/json", strings.NewReader(
		`{"model": "bofh", "prompt": "The server ", "max_tokens": 32, "temperature": 0, "seed": 1}`))
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	var c struct {
		Choices []struct {
			Text         string `json:"text"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Status)
	fmt.Println("finish:", c.Choices[0].FinishReason, "tokens:", c.Usage.CompletionTokens, "characters:", len([]rune(c.Choices[0].Text)))
	// Output:
	// 200 OK
	// finish: length tokens: 32 characters: 32
}

// Serve the text generator from four packed sessions used as adapter
// slots: requests for configurations the slots hold run without a switch
// and never wait for each other's groups.
func ExampleShiraSlotsEngine() {
	if err := ort.Init(); err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	ws, vocab, lib, cleanup := textGenerator(ctx)
	defer cleanup()

	var slots []*ort.Session
	for range 4 {
		sess, err := ort.OpenExported(ctx, ws.Model, nil)
		if err != nil {
			log.Fatal(err)
		}
		defer sess.Close()
		slots = append(slots, sess)
	}
	eng, err := serve.ShiraSlotsEngine(slots, lib)
	if err != nil {
		log.Fatal(err)
	}
	srv, err := serve.New(serve.Options{Name: "charlm", Engine: eng, Text: vocab, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	defer srv.Close(ctx)

	for _, style := range []string{"bofh", "legal", "bofh"} {
		resp, err := http.Post(ts.URL+"/v1/completions", "application/json", strings.NewReader(
			`{"model": "`+style+`", "prompt": "The ", "max_tokens": 8, "temperature": 0}`))
		if err != nil {
			log.Fatal(err)
		}
		resp.Body.Close()
		fmt.Println(style, resp.Status)
	}
	// Output:
	// bofh 200 OK
	// legal 200 OK
	// bofh 200 OK
}
