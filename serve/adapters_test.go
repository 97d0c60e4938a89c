package serve_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/serve"
)

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func loadBody(name, path string) []byte {
	b, _ := json.Marshal(map[string]string{"lora_name": name, "lora_path": path})
	return b
}

func unloadBody(name string) []byte {
	b, _ := json.Marshal(map[string]string{"lora_name": name})
	return b
}

// listed returns the ids GET /v1/models lists.
func listed(t testing.TB, base string) []string {
	t.Helper()
	code, body := get(t, base+"/v1/models")
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &list); code != 200 || err != nil {
		t.Fatalf("GET /v1/models: %d %s", code, body)
	}
	var ids []string
	for _, d := range list.Data {
		ids = append(ids, d.ID)
	}
	return ids
}

// TestLoadDisabled: without an AdapterRoot, loading at run time is
// refused (403) and changes nothing. (Unloading stays allowed, as
// documented in docs/serving.md.)
func TestLoadDisabled(t *testing.T) {
	f := newMLP(t)
	_, ts, lib, _ := f.server(t, ort.ModePacked, serve.Options{})
	for _, p := range []string{f.adapters["a"], "x.shira"} {
		checkRefused(t, ts.URL, badCase{"load " + p, "/v1/load_lora_adapter", string(loadBody("new", p)), 403})
	}
	checkRefused(t, ts.URL, badCase{"unload a", "/v1/unload_lora_adapter", string(unloadBody("a")), 403})
	if st := lib.Stats(); st.Registered != 3 {
		t.Errorf("%d adapters registered, want 3", st.Registered)
	}
	x := []float32{1, 2, 3, 4, 5, 6, 7, 8}
	if d := bitDiff(infer(t, ts.URL, "a", x), f.want(t, "a", ort.ModePacked, x)); d != "" {
		t.Error(d)
	}
}

// TestLoadUnload loads adapters at run time from inside the AdapterRoot
// (usable at once, and exactly the file's adapter), refuses paths that
// escape it through ".." or a link (403), missing paths (404), taken
// names (409), bad names and bodies (400), and unloads: later requests
// get 404, the name can be loaded again from another file.
func TestLoadUnload(t *testing.T) {
	f := newMLP(t)
	tmp := t.TempDir()
	root := filepath.Join(tmp, "root")
	outside := filepath.Join(tmp, "outside")
	copyFile(t, f.adapters["b"], filepath.Join(root, "new.shira"))
	copyFile(t, f.adapters["c"], filepath.Join(root, "sub", "c.shira"))
	copyFile(t, f.adapters["c"], filepath.Join(outside, "x.shira"))
	copyFile(t, f.adapters["a"], filepath.Join(root, "corrupt.shira"))
	if err := os.WriteFile(filepath.Join(root, "corrupt.shira"), []byte("SHRA but not an adapter"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "x.shira"), filepath.Join(root, "link.shira")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "linkdir")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "sub", "c.shira"), filepath.Join(root, "inlink.shira")); err != nil {
		t.Fatal(err)
	}
	_, ts, lib, _ := f.server(t, ort.ModePacked, serve.Options{AdapterRoot: root})
	x := []float32{1, -2, 3, -4, 5, -6, 7, -8}
	wantB, wantC := f.want(t, "b", ort.ModePacked, x), f.want(t, "c", ort.ModePacked, x)
	load := func(name, path string) (int, []byte) {
		return post(t, ts.URL+"/v1/load_lora_adapter", loadBody(name, path))
	}

	if code, body := load("new", "new.shira"); code != 200 {
		t.Fatalf("load new.shira: %d %s", code, body)
	}
	if d := bitDiff(infer(t, ts.URL, "new", x), wantB); d != "" {
		t.Errorf("loaded adapter: %s", d)
	}
	if code, body := load("abs", filepath.Join(root, "sub", "c.shira")); code != 200 {
		t.Fatalf("load by absolute path: %d %s", code, body)
	}
	if code, body := load("inlink", "inlink.shira"); code != 200 {
		t.Fatalf("load through a link that stays inside: %d %s", code, body)
	}
	if d := bitDiff(infer(t, ts.URL, "inlink@1,new", x), f.want(t, "c,b", ort.ModePacked, x)); d != "" {
		t.Errorf("loaded adapters together: %s", d)
	}
	registered := lib.Stats().Registered
	for _, c := range []badCase{
		{"escape by ..", "", string(loadBody("x", "../outside/x.shira")), 403},
		{"escape by .. inside a path", "", string(loadBody("x", "sub/../../outside/x.shira")), 403},
		{"escape by an absolute path", "", string(loadBody("x", filepath.Join(outside, "x.shira"))), 403},
		{"escape by a link", "", string(loadBody("x", "link.shira")), 403},
		{"escape by a linked directory", "", string(loadBody("x", "linkdir/x.shira")), 403},
		{"escape by .. to a missing file", "", string(loadBody("x", "../outside/missing.shira")), 403},
		{"escape to the root's parent", "", string(loadBody("x", "..")), 403},
		{"missing file", "", string(loadBody("x", "missing.shira")), 404},
		{"missing directory", "", string(loadBody("x", "nodir/x.shira")), 404},
		{"a directory that is not a checkpoint", "", string(loadBody("x", "sub")), 422},
		{"duplicate name", "", string(loadBody("new", "sub/c.shira")), 409},
		{"name of a startup adapter", "", string(loadBody("a", "sub/c.shira")), 409},
		{"the base model's name", "", string(loadBody(mlpName, "sub/c.shira")), 409},
		{"name with a comma", "", string(loadBody("x,y", "sub/c.shira")), 400},
		{"name with @", "", string(loadBody("x@1", "sub/c.shira")), 400},
		{"name with a slash", "", string(loadBody("x/y", "sub/c.shira")), 400},
		{"no name", "", string(loadBody("", "sub/c.shira")), 400},
		{"no path", "", string(loadBody("x", "")), 400},
		{"malformed JSON", "", `{"lora_name":`, 400},
	} {
		c.path = "/v1/load_lora_adapter"
		checkRefused(t, ts.URL, c)
	}
	if n := lib.Stats().Registered; n != registered {
		t.Errorf("refused loads registered adapters: %d, was %d", n, registered)
	}
	if d := bitDiff(infer(t, ts.URL, "new", x), wantB); d != "" {
		t.Errorf("after the refused loads: %s", d)
	}

	// A file that fails validation registers (only its readability is
	// checked then) and is refused with 422 when used; nothing else
	// changes.
	if code, body := load("corrupt", "corrupt.shira"); code != 200 {
		t.Fatalf("load corrupt.shira: %d %s", code, body)
	}
	checkRefused(t, ts.URL, badCase{"corrupt adapter", "/v2/models/" + mlpName + "/infer", string(inferBody("corrupt", x)), 422})
	checkRefused(t, ts.URL, badCase{"corrupt adapter completion", "/v2/models/" + mlpName + "/infer", string(inferBody("new,corrupt", x)), 422})
	if d := bitDiff(infer(t, ts.URL, "new", x), wantB); d != "" {
		t.Errorf("after the corrupt adapter: %s", d)
	}

	if ids := listed(t, ts.URL); !slices.Equal(ids, []string{mlpName, "a", "abs", "b", "c", "corrupt", "inlink", "new"}) {
		t.Errorf("listed %v", ids)
	}
	// Unload: 404 from then on; the name is free again.
	if code, body := post(t, ts.URL+"/v1/unload_lora_adapter", unloadBody("new")); code != 200 {
		t.Fatalf("unload: %d %s", code, body)
	}
	checkRefused(t, ts.URL, badCase{"unloaded adapter", "/v2/models/" + mlpName + "/infer", string(inferBody("new", x)), 404})
	checkRefused(t, ts.URL, badCase{"unload twice", "/v1/unload_lora_adapter", string(unloadBody("new")), 404})
	checkRefused(t, ts.URL, badCase{"unload unknown", "/v1/unload_lora_adapter", string(unloadBody("zzz")), 404})
	checkRefused(t, ts.URL, badCase{"unload without a name", "/v1/unload_lora_adapter", `{}`, 400})
	if slices.Contains(listed(t, ts.URL), "new") {
		t.Error("the unloaded adapter is still listed")
	}
	if code, body := load("new", "sub/c.shira"); code != 200 {
		t.Fatalf("load again under the same name: %d %s", code, body)
	}
	if d := bitDiff(infer(t, ts.URL, "new", x), wantC); d != "" {
		t.Errorf("name loaded again from another file: %s", d)
	}
}

// TestUnloadInFlight unloads an adapter while a request for it waits in
// the queue (admitted, not yet switched in): the request still completes
// with exactly that adapter's output, later requests get 404, and a
// request for the name loaded again from another file meanwhile gets the
// new file's adapter.
func TestUnloadInFlight(t *testing.T) {
	f := newMLP(t)
	lib := f.library(t)
	sess := openSession(t, f.model, ort.ModePacked)
	eng := serve.ShiraEngine(sess, lib)
	slow := &slowBackend{inner: eng.Backend, gate: make(chan struct{}), started: make(chan struct{}, 1)}
	eng.Backend = slow
	srv, ts := newServer(t, serve.Options{Name: mlpName, Engine: eng, AdapterRoot: filepath.Dir(f.adapters["a"])})
	x := []float32{1, 2, 3, 4, 5, 6, 7, 8}
	want := f.want(t, "c", ort.ModePacked, x)

	type res struct {
		y   []float32
		err error
	}
	first := make(chan res, 1)
	go func() {
		y, err := tryInfer(context.Background(), ts.URL, "", x)
		first <- res{y, err}
	}()
	<-slow.started // the base request runs (held by the gate)
	second := make(chan res, 1)
	go func() {
		y, err := tryInfer(context.Background(), ts.URL, "c", x)
		second <- res{y, err}
	}()
	waitFor(t, "the request for c to wait in the queue", func() bool { return srv.Scheduler().Stats().QueueDepth == 1 })
	if code, body := post(t, ts.URL+"/v1/unload_lora_adapter", unloadBody("c")); code != 200 {
		t.Fatalf("unload: %d %s", code, body)
	}
	checkRefused(t, ts.URL, badCase{"unloaded adapter", "/v2/models/" + mlpName + "/infer", string(inferBody("c", x)), 404})
	// The name loaded again from another file, while the request for the
	// old adapter still waits: a request for the new one gets the new one.
	if code, body := post(t, ts.URL+"/v1/load_lora_adapter", loadBody("c", "b.shira")); code != 200 {
		t.Fatalf("load c from b.shira: %d %s", code, body)
	}
	third := make(chan res, 1)
	go func() {
		y, err := tryInfer(context.Background(), ts.URL, "c", x)
		third <- res{y, err}
	}()
	waitFor(t, "the request for the new c to wait in the queue", func() bool { return srv.Scheduler().Stats().QueueDepth == 2 })
	close(slow.gate) // the base request completes, then the others run
	if r := <-first; r.err != nil {
		t.Fatalf("base request: %v", r.err)
	}
	r := <-second
	if r.err != nil {
		t.Fatalf("the request admitted before the unload: %v", r.err)
	}
	if d := bitDiff(r.y, want); d != "" {
		t.Errorf("the request admitted before the unload: %s", d)
	}
	r = <-third
	if r.err != nil {
		t.Fatalf("the request for the adapter loaded again: %v", r.err)
	}
	if d := bitDiff(r.y, f.want(t, "b", ort.ModePacked, x)); d != "" {
		t.Errorf("the request for the adapter loaded again (from b.shira): %s", d)
	}
	if code, body := post(t, ts.URL+"/v1/unload_lora_adapter", unloadBody("c")); code != 200 {
		t.Fatalf("unload: %d %s", code, body)
	}
	checkRefused(t, ts.URL, badCase{"unloaded adapter, later", "/v2/models/" + mlpName + "/infer", string(inferBody("c", x)), 404})
	// Once nothing uses it, the unloaded adapter is closed.
	if d := bitDiff(infer(t, ts.URL, "a", x), f.want(t, "a", ort.ModePacked, x)); d != "" {
		t.Error(d)
	}
	if st := lib.Stats(); st.Open != 1 || st.InUse != 1 {
		t.Errorf("library %+v: want only a open, held by the active configuration", st)
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
