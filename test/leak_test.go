package test

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/internal/synth"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
)

// rssBytes reads the resident set size from /proc/self/statm.
func rssBytes(tb testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		tb.Skipf("no /proc/self/statm: %v", err)
	}
	f := strings.Fields(string(b))
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		tb.Fatal(err)
	}
	return pages * int64(os.Getpagesize())
}

// TestSwitchRunCyclesDoNotLeak: 10 000 switch+Run cycles in every mode (in
// baked mode every switch builds and swaps a session) keep RSS within a
// small bound after a warm-up, and every session closes cleanly (Close is
// idempotent).
func TestSwitchRunCyclesDoNotLeak(t *testing.T) {
	orttest.Require(t)
	dir, m, w := exportModel(t, repoPath("models", "tiny", "model.onnx"), export.Options{})
	cfgs := [2]patch.Config{
		{Adapter: makeAdapter(t, m, w, synth.Options{Mask: synth.MaskRandom, Density: 0.05, Scale: 0.3, Seed: 31, Semantics: adapter.Delta}), Alpha: 1},
		{Adapter: makeAdapter(t, m, w, synth.Options{Mask: synth.MaskWeightMagnitude, Density: 0.05, Scale: 0.3, Seed: 32, Semantics: adapter.Overwrite}), Alpha: 0.5},
	}
	for _, c := range []struct {
		mode   ort.Mode
		cycles int
	}{{ort.ModePacked, 10000}, {ort.ModeLive, 10000}, {ort.ModeHybrid, 10000}, {ort.ModeBaked, 10000}} {
		t.Run(c.mode.String(), func(t *testing.T) {
			sess, err := ort.Open(context.Background(), dir, &ort.Options{Mode: c.mode, IntraOpThreads: 1})
			if err != nil {
				t.Fatal(err)
			}
			if sess.Mode() != c.mode {
				t.Fatalf("opened as %v (fallback: %s)", sess.Mode(), sess.FallbackReason())
			}
			feeds := randomInputs(t, sess.Inputs(), 2, 5, nil)
			base := mustRun(t, sess, feeds)
			cycle := func(i int) {
				if err := sess.Set(context.Background(), cfgs[i%2]); err != nil {
					t.Fatal(err)
				}
				mustRun(t, sess, feeds)
			}
			warm := c.cycles / 10
			for i := range warm {
				cycle(i)
			}
			before := rssBytes(t)
			for i := warm; i < c.cycles; i++ {
				cycle(i)
			}
			after := rssBytes(t)
			if err := sess.Revert(context.Background()); err != nil {
				t.Fatal(err)
			}
			if c.mode == ort.ModeHybrid {
				if err := sess.WaitBaked(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			if got := mustRun(t, sess, feeds); !bytes.Equal(got["y"].Data, base["y"].Data) {
				t.Error("revert after the cycles did not restore the base outputs")
			}
			if err := sess.Close(); err != nil {
				t.Fatal(err)
			}
			if err := sess.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			growth := after - before
			t.Logf("%v: %d cycles, RSS %.1f MB -> %.1f MB (%+.2f MB)", c.mode, c.cycles, float64(before)/1e6, float64(after)/1e6, float64(growth)/1e6)
			if growth > 16<<20 {
				t.Fatalf("RSS grew by %.1f MB over %d switch+Run cycles", float64(growth)/1e6, c.cycles-warm)
			}
		})
	}
}
