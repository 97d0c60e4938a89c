package serve_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/internal/textgen"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/sched"
	"github.com/shira-ort/shira-ort/serve"
)

// slowMLP serves the MLP on a backend whose Runs take delay.
// A negative delay holds every Run until slowBackend.gate is closed.
func slowMLP(t *testing.T, f *mlpFixture, delay time.Duration, o serve.Options) (*serve.Server, string, *slowBackend) {
	t.Helper()
	lib := f.library(t)
	sess := openSession(t, f.model, ort.ModePacked)
	eng := serve.ShiraEngine(sess, lib)
	slow := &slowBackend{inner: eng.Backend, delay: delay, started: make(chan struct{}, 16)}
	if delay < 0 {
		slow.delay, slow.gate = 0, make(chan struct{})
	}
	eng.Backend = slow
	o.Name, o.Engine = mlpName, eng
	srv, ts := newServer(t, o)
	return srv, ts.URL, slow
}

type answer struct {
	code   int
	header http.Header
	body   []byte
	err    error
	took   time.Duration
}

// goInfer posts an infer request in a goroutine.
func goInfer(ctx context.Context, base, spec string, x []float32) <-chan answer {
	ch := make(chan answer, 1)
	go func() {
		t0 := time.Now()
		code, h, b, err := tryPost(ctx, base+"/v2/models/"+mlpName+"/infer", inferBody(spec, x))
		ch <- answer{code, h, b, err, time.Since(t0)}
	}()
	return ch
}

func wait(t *testing.T, ch <-chan answer) answer {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(20 * time.Second):
		t.Fatal("a request hangs")
		return answer{}
	}
}

// TestOverload: with one request running and QueueLimit 1 waiting,
// further requests are answered 503 with Retry-After at once, never
// queued or hung; the accepted ones complete correctly.
func TestOverload(t *testing.T) {
	f := newMLP(t)
	srv, base, slow := slowMLP(t, f, -1, serve.Options{Sched: sched.Options{QueueLimit: 1}})
	x := []float32{1, 2, 3, 4, 5, 6, 7, 8}
	running := goInfer(t.Context(), base, "a", x)
	<-slow.started
	queued := goInfer(t.Context(), base, "b", x)
	waitFor(t, "a request waiting", func() bool { return srv.Scheduler().Stats().QueueDepth == 1 })
	var refused []<-chan answer
	for _, spec := range []string{"a", "b", "", "c@2"} {
		refused = append(refused, goInfer(t.Context(), base, spec, x))
	}
	for i, ch := range refused {
		a := wait(t, ch)
		if a.err != nil || a.code != http.StatusServiceUnavailable || a.header.Get("Retry-After") == "" || !strings.Contains(string(a.body), "overloaded") {
			t.Errorf("request %d beyond the queue: %d %v %s (Retry-After %q), want 503 with Retry-After", i, a.code, a.err, a.body, a.header.Get("Retry-After"))
		}
	}
	// The refused requests were answered while the running one was still
	// held: none waited for it.
	if st := srv.Scheduler().Stats(); st.InFlight != 1 || st.Completed != 0 {
		t.Errorf("stats %+v: the first request should still be running", st)
	}
	close(slow.gate)
	for spec, ch := range map[string]<-chan answer{"a": running, "b": queued} {
		a := wait(t, ch)
		if a.err != nil || a.code != 200 {
			t.Fatalf("accepted request %q: %d %v %s", spec, a.code, a.err, a.body)
		}
		y, err := parseY(a.body, 1)
		if err != nil {
			t.Fatal(err)
		}
		if d := bitDiff(y, f.want(t, spec, ort.ModePacked, x)); d != "" {
			t.Errorf("accepted request %q: %s", spec, d)
		}
	}
	if st := srv.Scheduler().Stats(); st.Rejected != 4 || st.Completed != 2 || st.QueueDepth != 0 {
		t.Errorf("stats %+v: want 4 rejected, 2 completed", st)
	}
	// The queue is free again.
	if d := bitDiff(infer(t, base, "c@2", x), f.want(t, "c@2", ort.ModePacked, x)); d != "" {
		t.Error(d)
	}
}

// TestRequestTimeout: a request that runs out of RequestTimeout, running
// or waiting behind a slow one, is a 504; the server goes on.
func TestRequestTimeout(t *testing.T) {
	f := newMLP(t)
	srv, base, slow := slowMLP(t, f, 5*time.Second, serve.Options{RequestTimeout: 200 * time.Millisecond})
	x := []float32{1, 2, 3, 4, 5, 6, 7, 8}
	running := goInfer(t.Context(), base, "a", x)
	<-slow.started
	waiting := goInfer(t.Context(), base, "b", x)
	for name, ch := range map[string]<-chan answer{"running": running, "waiting": waiting} {
		a := wait(t, ch)
		if a.err != nil || a.code != http.StatusGatewayTimeout || a.took > 3*time.Second {
			t.Errorf("%s request: %d %v %s after %v, want 504 after ~200ms", name, a.code, a.err, a.body, a.took)
		}
	}
	waitFor(t, "the scheduler to be idle", func() bool { st := srv.Scheduler().Stats(); return st.InFlight == 0 && st.QueueDepth == 0 })
	slow.mu.Lock()
	slow.delay = 0
	slow.mu.Unlock()
	if d := bitDiff(infer(t, base, "b", x), f.want(t, "b", ort.ModePacked, x)); d != "" {
		t.Error(d)
	}
}

// TestClientCancel: a client that goes away frees its place in the queue
// (and its Run), so the next request is accepted.
func TestClientCancel(t *testing.T) {
	f := newMLP(t)
	srv, base, slow := slowMLP(t, f, 5*time.Second, serve.Options{Sched: sched.Options{QueueLimit: 1}})
	x := []float32{1, 2, 3, 4, 5, 6, 7, 8}
	ctxRun, cancelRun := context.WithCancel(t.Context())
	running := goInfer(ctxRun, base, "a", x)
	<-slow.started
	ctxWait, cancelWait := context.WithCancel(t.Context())
	waiting := goInfer(ctxWait, base, "b", x)
	waitFor(t, "a request waiting", func() bool { return srv.Scheduler().Stats().QueueDepth == 1 })
	if a := wait(t, goInfer(t.Context(), base, "c", x)); a.code != http.StatusServiceUnavailable {
		t.Fatalf("a third request: %d %s, want 503 (queue full)", a.code, a.body)
	}
	cancelWait()
	if a := wait(t, waiting); !errors.Is(a.err, context.Canceled) {
		t.Fatalf("cancelled waiting request: %d %v", a.code, a.err)
	}
	waitFor(t, "the cancelled request to leave the queue", func() bool { return srv.Scheduler().Stats().QueueDepth == 0 })
	third := goInfer(t.Context(), base, "c", x)
	waitFor(t, "the third request to wait", func() bool { return srv.Scheduler().Stats().QueueDepth == 1 })
	slow.mu.Lock()
	slow.delay = 0 // for the Runs to come; the running one still sleeps 5 s
	slow.mu.Unlock()
	cancelRun() // the running request's Run ends with its context
	if a := wait(t, running); !errors.Is(a.err, context.Canceled) {
		t.Fatalf("cancelled running request: %d %v", a.code, a.err)
	}
	// The third request was queued behind a 5 s Run: it is served once
	// the cancelled Run returns, well before that.
	a := wait(t, third)
	if a.err != nil || a.code != 200 || a.took > 3*time.Second {
		t.Fatalf("request after the cancellations: %d %v %s after %v", a.code, a.err, a.body, a.took)
	}
	y, err := parseY(a.body, 1)
	if err != nil {
		t.Fatal(err)
	}
	if d := bitDiff(y, f.want(t, "c", ort.ModePacked, x)); d != "" {
		t.Error(d)
	}
	if st := srv.Scheduler().Stats(); st.Canceled != 2 || st.Completed != 1 || st.Rejected != 1 {
		t.Errorf("stats %+v: want 2 canceled, 1 completed, 1 rejected", st)
	}
}

// TestGracefulShutdown: requests in flight when Close is called (running,
// queued, and completions between tokens) complete with 200 and the right
// output; requests after it get 503 with Retry-After, and readiness says
// not ready.
func TestGracefulShutdown(t *testing.T) {
	t.Run("infer", func(t *testing.T) {
		f := newMLP(t)
		srv, base, slow := slowMLP(t, f, -1, serve.Options{})
		x := []float32{1, 2, 3, 4, 5, 6, 7, 8}
		var inflight []<-chan answer
		specs := []string{"a", "b", "a,b"}
		inflight = append(inflight, goInfer(t.Context(), base, specs[0], x))
		<-slow.started
		for _, spec := range specs[1:] {
			inflight = append(inflight, goInfer(t.Context(), base, spec, x))
		}
		waitFor(t, "two requests waiting", func() bool { return srv.Scheduler().Stats().QueueDepth == 2 })
		closed := closeAsync(srv)
		waitReady(t, base, mlpName, false)
		checkAfterClose(t, base, "/v2/models/"+mlpName+"/infer", string(inferBody("a", x)))
		select {
		case err := <-closed:
			t.Fatalf("Close returned (%v) with requests in flight", err)
		default:
		}
		close(slow.gate)
		for i, ch := range inflight {
			a := wait(t, ch)
			if a.err != nil || a.code != 200 {
				t.Fatalf("request %q in flight at Close: %d %v %s", specs[i], a.code, a.err, a.body)
			}
			y, err := parseY(a.body, 1)
			if err != nil {
				t.Fatal(err)
			}
			if d := bitDiff(y, f.want(t, specs[i], ort.ModePacked, x)); d != "" {
				t.Errorf("request %q in flight at Close: %s", specs[i], d)
			}
		}
		if err := <-closed; err != nil {
			t.Errorf("Close: %v", err)
		}
		checkAfterClose(t, base, "/v2/models/"+mlpName+"/infer", string(inferBody("", x)))
	})
	t.Run("completions", func(t *testing.T) {
		f := newCharlm(t)
		lib := newLibrary(t, f.ws.Model, f.ws.Shira)
		sess := openSession(t, f.ws.Model, ort.ModePacked)
		eng := serve.ShiraEngine(sess, lib)
		slow := &slowBackend{inner: eng.Backend, delay: 5 * time.Millisecond, started: make(chan struct{}, 1)}
		eng.Backend = slow
		srv, ts := newServer(t, serve.Options{Name: "charlm", Engine: eng, Text: f.vocab})
		ref := openSession(t, f.ws.Model, ort.ModePacked)
		style := "bofh"
		const n = 60
		want := f.generate(t, ref, f.configs(t, style), "Once ", n, textgen.SampleOptions{Temperature: 0.7, Seed: 3})
		plain := make(chan answer, 1)
		go func() {
			code, h, b, err := tryPost(t.Context(), ts.URL+"/v1/completions", completionBody(style, "Once ", n, 0.7, 3, false))
			plain <- answer{code: code, header: h, body: b, err: err}
		}()
		waitFor(t, "the first completion to run", func() bool { return srv.Scheduler().Stats().Runs >= 5 })
		var wg sync.WaitGroup
		var streamed []string
		var done bool
		firstChunk := make(chan struct{})
		wg.Go(func() {
			streamed, _, done = streamNoFatal(ts.URL, completionBody(style, "Once ", n, 0.7, 3, true), firstChunk)
		})
		select {
		case <-firstChunk:
		case <-time.After(10 * time.Second):
			t.Fatal("the streaming completion did not start")
		}
		closed := closeAsync(srv)
		waitReady(t, ts.URL, "charlm", false)
		checkAfterClose(t, ts.URL, "/v1/completions", string(completionBody(style, "Once ", 3, 0, 1, false)))
		a := wait(t, plain)
		if a.err != nil || a.code != 200 {
			t.Fatalf("completion in flight at Close: %d %v %s", a.code, a.err, a.body)
		}
		if got := decodeCompletion(t, a.body); got != want {
			t.Errorf("completion in flight at Close: %q, want %q", got, want)
		}
		wg.Wait()
		if s := strings.Join(streamed, ""); s != want || !done {
			t.Errorf("streaming completion in flight at Close: %q (done %v), want %q", s, done, want)
		}
		if err := <-closed; err != nil {
			t.Errorf("Close: %v", err)
		}
	})
}

func closeAsync(srv *serve.Server) <-chan error {
	ch := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		ch <- srv.Close(ctx)
	}()
	return ch
}

// waitReady waits until /v2/health/ready and the model's ready endpoint
// say ready (200) or not (503).
func waitReady(t *testing.T, base, model string, ready bool) {
	t.Helper()
	want := 200
	if !ready {
		want = http.StatusServiceUnavailable
	}
	waitFor(t, "readiness to change", func() bool {
		code, _ := get(t, base+"/v2/health/ready")
		return code == want
	})
	if code, body := get(t, base+"/v2/models/"+model+"/ready"); code != want {
		t.Errorf("model ready: %d %s, want %d", code, body, want)
	}
	if code, _ := get(t, base+"/v2/health/live"); code != 200 {
		t.Errorf("live: %d", code)
	}
}

// checkAfterClose: a request after Close is a 503 with Retry-After.
func checkAfterClose(t *testing.T, base, path, body string) {
	t.Helper()
	code, h, b, err := tryPost(context.Background(), base+path, []byte(body))
	if err != nil || code != http.StatusServiceUnavailable || h.Get("Retry-After") == "" {
		t.Errorf("request after Close: %d %v %s (Retry-After %q), want 503", code, err, b, h.Get("Retry-After"))
	}
}

// TestBackendPanic: a panic in the backend's Run or Switch, or in a
// catalog, is a 500 for the requests it hits; the server goes on serving,
// correctly.
func TestBackendPanic(t *testing.T) {
	f := newMLP(t)
	srv, base, slow := slowMLP(t, f, 0, serve.Options{})
	x := []float32{1, 2, 3, 4, 5, 6, 7, 8}
	slow.mu.Lock()
	slow.panicOn = map[sched.Key]bool{sched.Base: true}
	slow.mu.Unlock()
	for range 2 {
		a := wait(t, goInfer(t.Context(), base, "", x))
		if a.code != http.StatusInternalServerError || !strings.Contains(string(a.body), "panic") {
			t.Errorf("panicking Run: %d %s, want 500", a.code, a.body)
		}
	}
	for _, spec := range []string{"a", "b,a"} {
		if d := bitDiff(infer(t, base, spec, x), f.want(t, spec, ort.ModePacked, x)); d != "" {
			t.Errorf("after the panics, %q: %s", spec, d)
		}
	}
	slow.mu.Lock()
	slow.panicOn = nil
	slow.panicSwitch = true
	slow.mu.Unlock()
	if a := wait(t, goInfer(t.Context(), base, "c", x)); a.code != http.StatusInternalServerError {
		t.Errorf("panicking Switch: %d %s, want 500", a.code, a.body)
	}
	slow.mu.Lock()
	slow.panicSwitch = false
	slow.mu.Unlock()
	for _, spec := range []string{"", "c", "a"} {
		if d := bitDiff(infer(t, base, spec, x), f.want(t, spec, ort.ModePacked, x)); d != "" {
			t.Errorf("after the panics, %q: %s", spec, d)
		}
	}
	if st := srv.Scheduler().Stats(); st.Failed != 3 {
		t.Errorf("stats %+v: want 3 failed", st)
	}

	// A panic in the handler's own code (here the catalog) is a 500 too.
	eng := echoEngine()
	cat := eng.Catalog.(*fakeCatalog)
	cat.panicOn = "boom"
	echo, ts := newServer(t, serve.Options{Name: "echo", Engine: eng})
	r := echoRequest(nil)
	withAdapter := r[:len(r)-1] + `,"parameters":{"adapter":"p,boom"}}`
	checkRefused(t, ts.URL, badCase{"panicking catalog", "/v2/models/echo/infer", withAdapter, 500})
	if code, body := post(t, ts.URL+"/v2/models/echo/infer", []byte(r)); code != 200 {
		t.Errorf("after the panic: %d %s", code, body)
	}
	if n := cat.heldCount(); n != 0 {
		t.Errorf("%d adapters still held after the panic", n)
	}
	// Nothing of the panicking request is left to wait for.
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := echo.Close(ctx); err != nil || time.Since(t0) > time.Second {
		t.Errorf("Close after the panic: %v after %v", err, time.Since(t0))
	}
}
