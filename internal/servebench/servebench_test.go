package servebench

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/internal/orttest"
)

// TestServeCharLMVerified runs the smallest grid with verification: the
// text generator, shira-packed, shira-slots (8 slots, one per client), ort-lora and base,
// 10 adapters under Zipf load from 8 clients for 1 s, completions of 8 to
// 24 tokens. Every completion must equal greedy generation on the
// offline-fused (or merged, or base) model, nothing may fail, the packed
// server must have grouped requests (fewer switches than scheduler
// requests) and the slots server switched a slot less often than once per
// completion. Not a timed test: throughput is only logged.
func TestServeCharLMVerified(t *testing.T) {
	orttest.Require(t)
	if testing.Short() {
		t.Skip("a 1 s load run per strategy")
	}
	var log bytes.Buffer
	cfg := Config{
		Models: []string{ModelCharLM}, Strategies: []string{ShiraPacked, ShiraSlots, OrtLoRA, Base}, Slots: 8, Tokens: TokenRange{8, 24},
		Adapters: []int{10}, Dists: []string{Zipf}, Clients: []int{8},
		Duration: time.Second, Warmup: 200 * time.Millisecond, CalibTime: -1,
		Verify: true, Dir: t.TempDir(), Log: &log,
	}
	rep, err := Run(t.Context(), cfg)
	t.Log(log.String())
	if err != nil {
		t.Fatal(err)
	}
	var md bytes.Buffer
	Markdown(&md, rep)
	t.Log("\n" + md.String())
	if len(rep.Rows) != 4 {
		t.Fatalf("%d rows, want 4", len(rep.Rows))
	}
	for _, r := range rep.Rows {
		if r.Requests == 0 || r.Verified == 0 {
			t.Errorf("%s: %d requests, %d verified", r.Strategy, r.Requests, r.Verified)
		}
		if r.Verified != r.Requests-r.Errors-r.Overloaded {
			t.Errorf("%s: %d responses verified of %d successful", r.Strategy, r.Verified, r.Requests-r.Errors-r.Overloaded)
		}
		if r.Wrong != 0 {
			t.Errorf("%s: %d of %d responses wrong", r.Strategy, r.Wrong, r.Verified)
		}
		if r.Errors != 0 || r.Overloaded != 0 {
			t.Errorf("%s: %d errors, %d overloaded: %v", r.Strategy, r.Errors, r.Overloaded, r.ErrorText)
		}
		if r.SchedRequests < int64(r.Requests)*8 {
			t.Errorf("%s: %d scheduler requests for %d completions of 8 or more tokens", r.Strategy, r.SchedRequests, r.Requests)
		}
		switch r.Strategy {
		case ShiraPacked:
			if r.Switches == 0 || r.SwitchesPer1k >= 1000 {
				t.Errorf("shira-packed: %d switches, %.1f per 1 000 scheduler requests: want grouping (> 0, < 1000)", r.Switches, r.SwitchesPer1k)
			}
		case ShiraSlots:
			if r.Switches == 0 || r.Switches >= int64(r.Requests) {
				t.Errorf("shira-slots: %d switches for %d completions: want some, fewer than one per completion", r.Switches, r.Requests)
			}
		default:
			if r.Switches != 0 {
				t.Errorf("%s: %d switches on a non-exclusive backend", r.Strategy, r.Switches)
			}
		}
	}
	if err := Write(filepath.Join(t.TempDir(), "out"), rep); err != nil {
		t.Fatal(err)
	}
}
