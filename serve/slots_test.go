package serve_test

import (
	"errors"
	"testing"

	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/sched"
	"github.com/shira-ort/shira-ort/serve"
)

// TestSlotsEngine: a slots engine runs each configuration on the slot that
// holds it, switching the least recently used idle slot only for a
// configuration no slot holds (counted in the switch metrics, not in the
// scheduler's Stats, whose scheduler is not exclusive); every response is
// the offline-fused model's; sessions that cannot be slots of one engine
// are refused.
func TestSlotsEngine(t *testing.T) {
	f := newMLP(t)
	lib := f.library(t)
	s1, s2 := openSession(t, f.model, ort.ModePacked), openSession(t, f.model, ort.ModePacked)
	for name, ss := range map[string][]*ort.Session{"none": nil, "nil": {s1, nil}, "twice": {s1, s1}} {
		if _, err := serve.ShiraSlotsEngine(ss, lib); !errors.Is(err, serve.ErrSlots) {
			t.Errorf("%s: %v, want ErrSlots", name, err)
		}
	}
	eng, err := serve.ShiraSlotsEngine([]*ort.Session{s1, s2}, lib)
	if err != nil {
		t.Fatal(err)
	}
	if eng.Exclusive {
		t.Error("a slots engine's scheduler must not be exclusive")
	}
	srv, ts := newServer(t, serve.Options{Name: mlpName, Engine: eng, Sched: sched.Options{MaxConcurrent: 2}})
	x := []float32{1, 2, 3, 4, 5, 6, 7, 8}
	switches := 0.0
	for i, step := range []struct {
		spec     string
		switches bool
	}{
		{"a", true}, {"b", true}, {"a", false}, {"b", false}, {"a", false},
		{"c@2", true}, // evicts b, used least recently
		{"a", false}, {"b", true}, {"c@2", true}, {"", true}, {"", false},
	} {
		if d := bitDiff(infer(t, ts.URL, step.spec, x), f.want(t, step.spec, ort.ModePacked, x)); d != "" {
			t.Fatalf("request %d (%q): %s", i, step.spec, d)
		}
		if step.switches {
			switches++
		}
		if got := scrape(t, ts.URL).value(`shira_switches_total{result="ok"}`); got != switches {
			t.Fatalf("request %d (%q): %v switches, want %v", i, step.spec, got, switches)
		}
	}
	if st := srv.Scheduler().Stats(); st.Switches != 0 || st.Completed != 11 {
		t.Errorf("scheduler stats %+v: want 11 completed, no scheduler switches", st)
	}
	checkRefused(t, ts.URL, badCase{"unknown", "/v2/models/" + mlpName + "/infer", string(inferBody("zzz", x)), 404})
	if got := scrape(t, ts.URL).value(`shira_switches_total{result="ok"}`); got != switches {
		t.Errorf("a refused request switched a slot: %v switches, want %v", got, switches)
	}
}
