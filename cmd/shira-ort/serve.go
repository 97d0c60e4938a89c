package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/demo/charlm"
	"github.com/shira-ort/shira-ort/internal/textgen"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/registry"
	"github.com/shira-ort/shira-ort/sched"
	"github.com/shira-ort/shira-ort/serve"
)

// serveFlags are `shira-ort serve`'s flags.
type serveFlags struct {
	model, name, listen, mode, vocab, charlmDir, adapterRoot, cacheDir, logFormat string
	adapterDirs, adapters                                                         []string
	threads, maxOpen, queue, maxBatch, concurrency, maxTokens, slots              int
	maxOpenBytes, maxBody, transCache                                             int64
	loraDensity                                                                   float64
	maxWait, timeout, drain                                                       time.Duration
	rounding                                                                      roundingFlag
}

// newServeCmd is `shira-ort serve`: an HTTP server for one exported model
// and a library of adapters.
func newServeCmd() *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:   "serve (--model DIR | --charlm DIR) [--adapters DIR]... [--adapter NAME=PATH]... [--listen ADDR]",
		Short: "Serve a model with many adapters over HTTP (KServe v2, OpenAI-style completions, Prometheus metrics)",
		Long: `serve answers inference requests for one exported model, each naming its adapter
configuration, on the Open Inference Protocol (KServe v2 REST: POST /v2/models/NAME/infer with the
request parameter "adapter") and, for a character text generator (--vocab, or --charlm for the shipped
one), an OpenAI-style POST /v1/completions whose "model" field names the adapter ("stream": true for
server-sent events). GET /v1/models lists the adapters; POST /v1/load_lora_adapter and
/v1/unload_lora_adapter load and unload them at run time (only with --adapter-root; loading from inside it);
GET /metrics serves Prometheus metrics.

Adapters (.shira files, PEFT SHiRA checkpoint directories, and PEFT LoRA checkpoint directories with
--lora-density) are registered from --adapters directories and --adapter flags, opened when first
used and kept open up to --max-open / --max-open-bytes. Requests for the same configuration are
grouped between switches; no request waits longer than --max-wait for another configuration's group
to give way; requests of the same shape are concatenated into one Run up to --max-batch rows when
every input and output has a free batch dimension. With --slots N, N sessions of the model serve as
adapter slots instead: each request runs on the slot holding its configuration, a slot switches only
for a configuration no slot holds, and configurations never wait for each other's groups (N times the
session's memory; use at least as many slots as concurrent generations, or the slots thrash). Beyond
--queue waiting requests the server answers 503 at once. SIGINT or SIGTERM stop accepting
connections and drain the requests in flight (up to --drain).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runServe(cmd.Context(), cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.model, "model", "", "exported model directory (shira-ort export)")
	fl.StringVar(&f.charlmDir, "charlm", "", "prepare the shipped text generator and its style adapters in DIR and serve them (with completions)")
	fl.StringVar(&f.name, "name", "", "the model's name in both protocols (default: the model directory's name, or charlm)")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:8080", "address to listen on")
	fl.StringVar(&f.mode, "mode", "packed", "session mode: packed, live, baked or hybrid")
	fl.IntVar(&f.threads, "threads", 0, "ORT intra-op threads (0: ORT's default)")
	fl.Var(&f.rounding, "rounding", roundingUsage)
	fl.StringArrayVar(&f.adapterDirs, "adapters", nil, "register every .shira file and PEFT checkpoint directory in DIR (repeatable)")
	fl.StringArrayVar(&f.adapters, "adapter", nil, "register one adapter: NAME=PATH (repeatable)")
	fl.StringVar(&f.adapterRoot, "adapter-root", "", "enable loading (from paths inside this directory) and unloading adapters at run time")
	fl.StringVar(&f.cacheDir, "cache-dir", "", "where converted PEFT checkpoints are cached (default: user cache dir)")
	fl.IntVar(&f.maxOpen, "max-open", registry.DefaultMaxOpen, "adapters kept open while unused")
	fl.Int64Var(&f.maxOpenBytes, "max-open-bytes", 0, "bytes of adapters kept open while unused (0: no bound)")
	fl.Int64Var(&f.transCache, "translation-cache", 256<<20, "packed mode: bytes of adapters translated into the packed layout kept for the next switch to them (0: translate at every switch)")
	fl.Float64Var(&f.loraDensity, "lora-density", 0, "register PEFT LoRA checkpoints, converted to SHiRA by top-k at this density (0: refuse them)")
	fl.DurationVar(&f.maxWait, "max-wait", 50*time.Millisecond, "longest a request waits for another configuration's group before the server switches")
	fl.IntVar(&f.queue, "queue", 1024, "most requests waiting; beyond, 503 at once")
	fl.IntVar(&f.maxBatch, "max-batch", 16, "most rows concatenated into one Run (1: no batching; needs a free batch dimension)")
	fl.IntVar(&f.concurrency, "concurrency", 1, "Runs in flight at once (with --slots, at most the slot count)")
	fl.IntVar(&f.slots, "slots", 0, "open this many sessions as adapter slots (serve.ShiraSlotsEngine; 0: one session, switched between groups)")
	fl.StringVar(&f.vocab, "vocab", "", "vocabulary of a character text generator (enables /v1/completions)")
	fl.IntVar(&f.maxTokens, "max-tokens", serve.DefaultMaxTokens, "most tokens one completion may ask for")
	fl.Int64Var(&f.maxBody, "max-body", serve.DefaultMaxBodyBytes, "largest request body in bytes")
	fl.DurationVar(&f.timeout, "timeout", serve.DefaultRequestTimeout, "longest a request may take")
	fl.DurationVar(&f.drain, "drain", 30*time.Second, "longest a shutdown waits for requests in flight")
	fl.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	return cmd
}

// runServe builds the server from f, serves until ctx ends, then drains.
func runServe(ctx context.Context, cmd *cobra.Command, f serveFlags) error {
	var logger *slog.Logger
	switch f.logFormat {
	case "text":
		logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
	case "json":
		logger = slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), nil))
	default:
		return fmt.Errorf("--log-format %q: want text or json", f.logFormat)
	}
	if (f.model == "") == (f.charlmDir == "") {
		return errors.New("give exactly one of --model DIR and --charlm DIR")
	}
	mode, err := ort.ParseMode(f.mode)
	if err != nil {
		return fmt.Errorf("--mode: %w", err)
	}
	if f.slots < 0 || (f.slots > 0 && f.concurrency > f.slots) {
		return fmt.Errorf("--slots %d, --concurrency %d: want slots ≥ 0 and concurrency ≤ slots", f.slots, f.concurrency)
	}
	if err := ort.Init(); err != nil {
		return err
	}
	var m *export.Model
	if f.charlmDir != "" {
		// Prepared once: a restart serves what the first run prepared.
		exported := filepath.Join(f.charlmDir, "exported")
		if _, err := os.Stat(filepath.Join(exported, export.ManifestFile)); err == nil {
			if m, err = export.Open(exported); err != nil {
				return err
			}
			defer m.Close()
		} else {
			ws, err := charlm.Prepare(ctx, f.charlmDir)
			if err != nil {
				return err
			}
			defer ws.Close()
			m = ws.Model
		}
		f.adapterDirs = append([]string{f.charlmDir}, f.adapterDirs...)
		if f.vocab == "" {
			f.vocab = filepath.Join(f.charlmDir, "vocab.json")
		}
		if f.name == "" {
			f.name = "charlm"
		}
	} else {
		if m, err = export.Open(f.model); err != nil {
			return err
		}
		defer m.Close()
		if f.name == "" {
			abs, _ := filepath.Abs(f.model)
			f.name = filepath.Base(abs)
		}
	}
	var vocab *textgen.Vocab
	if f.vocab != "" {
		if vocab, err = textgen.LoadVocab(f.vocab); err != nil {
			return err
		}
	}
	lib, err := registry.New(registry.Options{Model: m, CacheDir: f.cacheDir, MaxOpen: f.maxOpen,
		MaxOpenBytes: f.maxOpenBytes, LoraDensity: f.loraDensity, Logger: logger})
	if err != nil {
		return err
	}
	defer lib.Close()
	for _, dir := range f.adapterDirs {
		names, err := lib.RegisterDir(ctx, dir)
		logger.Info("adapters registered", "dir", dir, "count", len(names))
		if err != nil {
			logger.Warn("some adapters were not registered", "dir", dir, "error", err)
		}
	}
	for _, a := range f.adapters {
		name, path, ok := strings.Cut(a, "=")
		if !ok {
			return fmt.Errorf("--adapter %q: want NAME=PATH", a)
		}
		if err := lib.Register(ctx, name, path); err != nil {
			return fmt.Errorf("--adapter %s: %w", name, err)
		}
	}
	var sessions []*ort.Session
	defer func() {
		for _, s := range sessions {
			s.Close()
		}
	}()
	for range max(f.slots, 1) {
		sess, err := ort.OpenExported(ctx, m, &ort.Options{Mode: mode, IntraOpThreads: f.threads, CheckFinite: true, Rounding: f.rounding.r,
			PackedTranslationCache: translationCacheOption(f.transCache)})
		if err != nil {
			return err
		}
		sessions = append(sessions, sess)
	}
	sess := sessions[0]
	if r := sess.FallbackReason(); r != "" {
		logger.Warn("packed mode does not apply", "mode", sess.Mode().String(), "reason", r)
	}
	eng := serve.ShiraEngine(sess, lib)
	if f.slots > 0 {
		if eng, err = serve.ShiraSlotsEngine(sessions, lib); err != nil {
			return err
		}
	}
	maxBatch := f.maxBatch
	if maxBatch > 1 && !serve.Batchable(eng) {
		logger.Info("batching off: an input or output has no free batch dimension")
		maxBatch = 1
	}
	srv, err := serve.New(serve.Options{
		Name: f.name, Engine: eng, Text: vocab, AdapterRoot: f.adapterRoot, MaxBodyBytes: f.maxBody,
		RequestTimeout: f.timeout, MaxTokens: f.maxTokens, Logger: logger,
		Sched: sched.Options{MaxWait: f.maxWait, QueueLimit: f.queue, MaxBatch: maxBatch, MaxConcurrent: f.concurrency},
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	logger.Info("serving", "addr", ln.Addr().String(), "model", f.name, "mode", sess.Mode().String(), "slots", f.slots,
		"adapters", lib.Stats().Registered, "completions", vocab != nil)
	fmt.Fprintf(cmd.OutOrStdout(), "listening on http://%s\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down: draining requests in flight", "timeout", f.drain)
	dctx, cancel := context.WithTimeout(context.Background(), f.drain)
	defer cancel()
	// The server stops admitting (503, not ready) at once while the HTTP
	// server stops accepting and waits for its handlers.
	closed := make(chan error, 1)
	go func() { closed <- srv.Close(dctx) }()
	herr := hs.Shutdown(dctx)
	serr := <-closed
	if err := errors.Join(herr, serr); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	logger.Info("stopped")
	return nil
}

// translationCacheOption maps the --translation-cache flag (bytes; 0 or
// less: none) to ort.Options.PackedTranslationCache (0 would mean the
// default, a negative value none).
func translationCacheOption(flag int64) int64 {
	if flag <= 0 {
		return -1
	}
	return flag
}
