package test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/internal/synth"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// snapshot copies every exposed weight of a live session.
func snapshot(tb testing.TB, s *ort.Session, m *export.Manifest) map[string][]byte {
	out := map[string][]byte{}
	for _, e := range m.Tensors {
		out[e.Name] = weight(tb, s, e.Name)
	}
	return out
}

func sameWeights(tb testing.TB, s *ort.Session, m *export.Manifest, want map[string][]byte) {
	tb.Helper()
	for _, e := range m.Tensors {
		if !bytes.Equal(weight(tb, s, e.Name), want[e.Name]) {
			tb.Fatalf("weight %s changed by a refused adapter", e.Name)
		}
	}
}

// TestBadAdaptersChangeNothing: a corrupted file, an adapter made for
// another model and an out-of-range index each give a clear error, and the
// live weights — with adapter A active — stay exactly as they were.
func TestBadAdaptersChangeNothing(t *testing.T) {
	orttest.Require(t)
	dir, m, w := exportModel(t, repoPath("models", "tiny", "model.onnx"), export.Options{})
	sess, err := ort.Open(context.Background(), dir, &ort.Options{Mode: ort.ModeLive})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	a := makeAdapter(t, m, w, synth.Options{Name: "A", Mask: synth.MaskRandom, Density: 0.02, Scale: 0.2, Seed: 5, Semantics: adapter.Delta})
	if err := sess.Set(context.Background(), patch.Config{Adapter: a, Alpha: 1}); err != nil {
		t.Fatal(err)
	}
	feeds := randomInputs(t, sess.Inputs(), 2, 9, nil)
	withA := mustRun(t, sess, feeds)
	before := snapshot(t, sess, m)

	t.Run("corrupted file", func(t *testing.T) {
		good, err := synth.New(m, w, synth.Options{Name: "B", Mask: synth.MaskRandom, Density: 0.02, Scale: 0.2, Seed: 6})
		if err != nil {
			t.Fatal(err)
		}
		raw, err := adapter.Encode(good)
		if err != nil {
			t.Fatal(err)
		}
		for _, corrupt := range map[string][]byte{
			"truncated":      raw[:len(raw)/2],
			"bad identifier": append(append([]byte{}, raw[:4]...), append([]byte("XXXX"), raw[8:]...)...),
			"empty":          {},
		} {
			p := filepath.Join(t.TempDir(), "bad.shira")
			if err := os.WriteFile(p, corrupt, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := adapter.Open(p); err == nil {
				t.Fatalf("corrupted adapter accepted")
			} else {
				t.Logf("corrupted file: %v", err)
			}
		}
		sameWeights(t, sess, m, before)
	})

	t.Run("adapter for another model", func(t *testing.T) {
		_, om, ow := exportModel(t, repoPath("models", "testdata", "transpose", "model.onnx"), export.Options{})
		other := makeAdapter(t, om, ow, synth.Options{Name: "other", Mask: synth.MaskRandom, Density: 0.02, Scale: 0.2, Seed: 7})
		err := sess.Set(context.Background(), patch.Config{Adapter: other, Alpha: 1})
		if err == nil {
			t.Fatal("adapter for another model accepted")
		}
		t.Logf("another model: %v", err)
		sameWeights(t, sess, m, before)
	})

	t.Run("same names, different base weights", func(t *testing.T) {
		// An adapter whose target names and shapes match but whose base
		// fingerprint does not: made for a fine-tuned copy of the model.
		b, err := synth.New(m, w, synth.Options{Name: "C", Mask: synth.MaskRandom, Density: 0.02, Scale: 0.2, Seed: 8})
		if err != nil {
			t.Fatal(err)
		}
		b.Tensors[0].BaseSHA256[0] ^= 0xff
		err = sess.Set(context.Background(), patch.Config{Adapter: b, Alpha: 1})
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "fingerprint") && !strings.Contains(strings.ToLower(err.Error()), "sha") {
			t.Fatalf("fingerprint mismatch not reported: %v", err)
		}
		t.Logf("wrong base: %v", err)
		sameWeights(t, sess, m, before)
	})

	t.Run("index out of range", func(t *testing.T) {
		b, err := synth.New(m, w, synth.Options{Name: "D", Mask: synth.MaskRandom, Density: 0.02, Scale: 0.2, Seed: 9})
		if err != nil {
			t.Fatal(err)
		}
		// The last tensor gets one index past its end: the first tensors are
		// valid, so a patcher that wrote before validating would be caught.
		last := &b.Tensors[len(b.Tensors)-1]
		n, _ := tensor.NumElements(last.Shape)
		last.Indices[len(last.Indices)-1] = uint32(n)
		err = sess.Set(context.Background(), patch.Config{Adapter: b, Alpha: 1})
		if err == nil {
			t.Fatal("out-of-range index accepted")
		}
		t.Logf("index out of range: %v", err)
		sameWeights(t, sess, m, before)

		// The same adapter in a file is refused when it is read.
		b.Tensors[len(b.Tensors)-1].Indices[len(last.Indices)-1] = uint32(n - 1)
		// Flat uint32 indices, so the index can be found and corrupted.
		raw, err := adapter.EncodeWith(b, adapter.EncodeOptions{Index: adapter.FlatU32})
		if err != nil {
			t.Fatal(err)
		}
		le := []byte{byte(n - 1), byte((n - 1) >> 8), byte((n - 1) >> 16), byte((n - 1) >> 24)}
		i := bytes.LastIndex(raw, le)
		if i < 0 {
			t.Fatal("index not found in encoded adapter")
		}
		raw[i], raw[i+1], raw[i+2], raw[i+3] = 0xff, 0xff, 0xff, 0x7f
		if _, err := adapter.Decode(raw); err == nil {
			t.Fatal("file with an out-of-range index decoded")
		} else {
			t.Logf("file with index out of range: %v", err)
		}
	})

	if diff := firstDifference(mustRun(t, sess, feeds), withA); diff != "" {
		t.Fatalf("outputs changed after refused adapters: %s", diff)
	}
}
