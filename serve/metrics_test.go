package serve_test

import (
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/registry"
	"github.com/shira-ort/shira-ort/serve"
)

// TestMetrics checks /metrics against what the test did and against the
// scheduler's and the library's own counters: requests by endpoint and
// code, latency counts, switches (as many as sched Stats counts, and as
// many as the sequence of configurations needs), Runs, batches, queue
// waits, and the library's hits, misses and evictions (MaxOpen 1 forces
// some).
func TestMetrics(t *testing.T) {
	f := newMLP(t)
	lib, err := registry.New(registry.Options{Model: f.model, MaxOpen: 1, CacheDir: filepath.Join(t.TempDir(), "cache"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lib.Close() })
	for name, p := range f.adapters {
		if err := lib.Register(t.Context(), name, p); err != nil {
			t.Fatal(err)
		}
	}
	sess := openSession(t, f.model, ort.ModePacked)
	srv, ts := newServer(t, serve.Options{Name: mlpName, Engine: serve.ShiraEngine(sess, lib)})
	x := []float32{1, 2, 3, 4, 5, 6, 7, 8}
	good := []string{"a", "a", "b", "c", "", "a@0.5,b", "c", "c"}
	const wantSwitches = 6 // a, b, c, base, a@0.5,b, c
	for _, spec := range good {
		if d := bitDiff(infer(t, ts.URL, spec, x), f.want(t, spec, ort.ModePacked, x)); d != "" {
			t.Fatalf("%q: %s", spec, d)
		}
	}
	checkRefused(t, ts.URL, badCase{"unknown", "/v2/models/" + mlpName + "/infer", string(inferBody("zzz", x)), 404})
	checkRefused(t, ts.URL, badCase{"unknown", "/v2/models/" + mlpName + "/infer", string(inferBody("a,zzz", x)), 404})
	checkRefused(t, ts.URL, badCase{"malformed", "/v2/models/" + mlpName + "/infer", `{`, 400})
	if code, _ := get(t, ts.URL+"/v2/health/live"); code != 200 {
		t.Fatal(code)
	}

	m := scrape(t, ts.URL)
	st, ls := srv.Scheduler().Stats(), lib.Stats()
	if st.Switches != wantSwitches || st.SwitchErrors != 0 {
		t.Errorf("scheduler: %d switches (%d failed), want %d", st.Switches, st.SwitchErrors, wantSwitches)
	}
	if ls.Evictions == 0 {
		t.Errorf("library %+v: MaxOpen 1 and three adapters evicted nothing", ls)
	}
	for series, want := range map[string]float64{
		`shira_requests_total{code="200",endpoint="infer"}`:                 float64(len(good)),
		`shira_requests_total{code="404",endpoint="infer"}`:                 2,
		`shira_requests_total{code="400",endpoint="infer"}`:                 1,
		`shira_requests_total{code="200",endpoint="live"}`:                  1,
		`shira_request_duration_seconds_count{endpoint="infer"}`:            float64(len(good) + 3),
		`shira_switches_total{result="ok"}`:                                 float64(st.Switches),
		`shira_switch_duration_seconds_count`:                               float64(st.Switches),
		`shira_runs_total`:                                                  float64(st.Runs),
		`shira_batch_requests_count`:                                        float64(st.Runs),
		`shira_batch_requests_sum`:                                          float64(st.Completed),
		`shira_batch_rows_sum`:                                              float64(st.Rows),
		`shira_queue_wait_seconds_count`:                                    float64(st.Completed),
		`shira_queue_depth`:                                                 0,
		`shira_adapters_registered`:                                         3,
		`shira_adapters_open`:                                               float64(ls.Open),
		`shira_adapters_in_use`:                                             float64(ls.InUse),
		`shira_adapters_open_bytes`:                                         float64(ls.OpenBytes),
		`shira_adapter_library_hits_total`:                                  float64(ls.Hits),
		`shira_adapter_library_misses_total`:                                float64(ls.Misses),
		`shira_adapter_library_evictions_total`:                             float64(ls.Evictions),
		`shira_adapter_library_conversions_total`:                           0,
		`shira_generated_tokens_total`:                                      0,
		`shira_request_duration_seconds_bucket{endpoint="infer",le="+Inf"}`: float64(len(good) + 3),
	} {
		got, ok := m[series]
		if !ok {
			t.Errorf("%s missing from /metrics", series)
		} else if got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if st.Runs != int64(len(good)) || ls.Hits == 0 || ls.Misses < 3 {
		t.Errorf("scheduler %+v, library %+v", st, ls)
	}
	if v := m[`shira_switches_total{result="error"}`]; v != 0 {
		t.Errorf("switch errors counted: %v", v)
	}
}

// TestMetricsRegisterer: metrics registered on a caller's registry are
// served from it (a Registerer that is a Gatherer needs no Gatherer); a
// Registerer that cannot be gathered without a Gatherer is refused at New
// instead of failing every scrape.
func TestMetricsRegisterer(t *testing.T) {
	reg := prometheus.NewRegistry()
	_, ts := newServer(t, serve.Options{Name: "echo", Engine: echoEngine(), Registerer: reg})
	if code, body := post(t, ts.URL+"/v2/models/echo/infer", []byte(echoRequest(nil))); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	if v := scrape(t, ts.URL)[`shira_requests_total{code="200",endpoint="infer"}`]; v != 1 {
		t.Errorf("shira_requests_total = %v, want 1", v)
	}
	mfs, err := reg.Gather()
	if err != nil || len(mfs) == 0 {
		t.Errorf("caller's registry: %d families, %v", len(mfs), err)
	}
	if _, err := serve.New(serve.Options{Name: "echo", Engine: echoEngine(), Logger: quiet,
		Registerer: prometheus.WrapRegistererWithPrefix("x_", prometheus.NewRegistry())}); err == nil {
		t.Error("New accepted a Registerer without a way to gather it")
	}
	// The same registry twice: the metrics are already registered.
	if _, err := serve.New(serve.Options{Name: "echo", Engine: echoEngine(), Logger: quiet, Registerer: reg}); err == nil {
		t.Error("New registered the metrics twice on one registry")
	}
}
