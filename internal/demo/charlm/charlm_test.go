package charlm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/demo/charlm"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/internal/textgen"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

func TestEmbeddedFiles(t *testing.T) {
	if len(charlm.Styles()) < 3 {
		t.Fatalf("want at least three SHiRA adapters, have %v", charlm.Styles())
	}
	if len(charlm.LoraStyles()) < 2 {
		t.Fatalf("want at least two LoRA adapters, have %v", charlm.LoraStyles())
	}
	b, err := charlm.Files.ReadFile("vocab.json")
	if err != nil {
		t.Fatal(err)
	}
	v, err := textgen.ParseVocab(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Decode(v.Encode("Hello, World!\n")); got != "Hello, World!\n" {
		t.Fatalf("round trip: %q", got)
	}
}

// TestSwitchAdapters loads the shipped model in one live session, switches
// each SHiRA adapter in (logits and sampled text change) and reverts (base
// logits bit for bit), and checks the base logits against torch's.
func TestSwitchAdapters(t *testing.T) {
	orttest.Require(t)
	ws, err := charlm.Prepare(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	v, err := textgen.LoadVocab(ws.Vocab)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := ort.Open(context.Background(), ws.Exported, &ort.Options{IntraOpThreads: 1, Mode: ort.ModeLive})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	m := &textgen.Model{R: sess, Vocab: v}

	var ref map[string]any
	b, err := charlm.Files.ReadFile("reference.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	prompt := ref["prompt"].(string)
	ids := v.Encode(prompt)
	check := func(name string) []byte {
		t.Helper()
		l, err := m.NextLogits(context.Background(), ids)
		if err != nil {
			t.Fatal(err)
		}
		want := ref[name].([]any)
		if len(want) == 0 || len(l) != len(want) {
			t.Fatalf("%s: %d logits, reference has %d", name, len(l), len(want))
		}
		var maxDiff float64
		for i, w := range want {
			maxDiff = math.Max(maxDiff, math.Abs(float64(l[i])-w.(float64)))
		}
		if maxDiff > 2e-3 {
			t.Errorf("%s: ORT logits differ from torch's by up to %g", name, maxDiff)
		}
		return tensor.Bytes(l)
	}
	opts := textgen.SampleOptions{Temperature: 0.8, TopK: 40, Seed: 3}
	const n = 40
	baseLogits := check("base")
	baseText, err := m.Generate(context.Background(), "\n", n, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range charlm.Styles() {
		a, err := adapter.Open(ws.Shira[s])
		if err != nil {
			t.Fatal(err)
		}
		if err := sess.Set(context.Background(), patch.Config{Adapter: a, Alpha: 1}); err != nil {
			t.Fatal(err)
		}
		if got := check(s); bytes.Equal(got, baseLogits) {
			t.Errorf("%s: logits unchanged", s)
		}
		txt, err := m.Generate(context.Background(), "\n", n, opts, nil)
		if err != nil {
			t.Fatal(err)
		}
		if txt == baseText {
			t.Errorf("%s: sampled text unchanged: %q", s, txt)
		}
		t.Logf("%-9s %q", s, txt)
		if err := sess.Revert(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := check("base"); !bytes.Equal(got, baseLogits) {
			t.Errorf("%s: revert did not restore the base logits bit for bit", s)
		}
		a.Close()
	}
	again, err := m.Generate(context.Background(), "\n", n, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again != baseText {
		t.Errorf("base text after reverts %q, want %q", again, baseText)
	}
}
