package textgen

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/shira-ort/shira-ort/tensor"
)

const testVocab = `{"chars": ["\n", " ", "a", "b", "c", "?"], "unk": 5, "context": 4}`

// fakeRunner returns logits that favour token (last id + 1) mod V, with a
// flat distribution when flat is set.
type fakeRunner struct {
	v     int
	flat  bool
	calls int
	lens  []int
}

func (f *fakeRunner) Run(_ context.Context, in map[string]*tensor.Tensor) (map[string]*tensor.Tensor, error) {
	f.calls++
	x := in["tokens"]
	if x == nil {
		return nil, errors.New("no tokens input")
	}
	ids := tensor.Int64s(x.Data)
	f.lens = append(f.lens, len(ids))
	l := make([]float32, len(ids)*f.v)
	for p, id := range ids {
		if !f.flat {
			l[p*f.v+int(id+1)%f.v] = 5
		}
	}
	y, err := tensor.FromFloat32([]int64{1, int64(len(ids)), int64(f.v)}, l)
	return map[string]*tensor.Tensor{"logits": y}, err
}

func vocab(t *testing.T) *Vocab {
	t.Helper()
	v, err := ParseVocab([]byte(testVocab))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVocab(t *testing.T) {
	v := vocab(t)
	if ids, want := v.Encode("ab z\n"), []int64{2, 3, 1, 5, 0}; !slices.Equal(ids, want) {
		t.Fatalf("Encode = %v, want %v", ids, want)
	}
	if got := v.Decode([]int64{2, 3, 99}); got != "ab\uFFFD" {
		t.Fatalf("Decode = %q", got)
	}
	for _, bad := range []string{`{}`, `{"chars": ["a", "a"]}`, `{"chars": ["ab"]}`, `{"chars": ["a"], "unk": 3}`, `[`} {
		if _, err := ParseVocab([]byte(bad)); err == nil {
			t.Errorf("ParseVocab(%s) succeeded", bad)
		}
	}
}

func TestGenerateGreedyAndContext(t *testing.T) {
	v := vocab(t)
	f := &fakeRunner{v: v.Size()}
	m := &Model{R: f, Vocab: v}
	var streamed string
	got, err := m.Generate(context.Background(), "a", 5, SampleOptions{}, func(s string) error { streamed += s; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if got != "bc?\n " || streamed != got {
		t.Fatalf("greedy = %q (streamed %q), want %q", got, streamed, "bc?\n ")
	}
	for _, n := range f.lens {
		if n > v.Context {
			t.Fatalf("ran the model on %d tokens, context is %d", n, v.Context)
		}
	}
	stop := errors.New("stop")
	if _, err := m.Generate(context.Background(), "a", 5, SampleOptions{}, func(string) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("emit error not returned: %v", err)
	}
}

func TestSamplerDeterministic(t *testing.T) {
	v := vocab(t)
	m := &Model{R: &fakeRunner{v: v.Size(), flat: true}, Vocab: v}
	o := SampleOptions{Temperature: 1, TopK: 3, Seed: 42}
	a, err := m.Generate(context.Background(), "a", 30, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := m.Generate(context.Background(), "a", 30, o, nil)
	if a != b {
		t.Fatalf("same seed, different text: %q vs %q", a, b)
	}
	o.Seed = 43
	if c, _ := m.Generate(context.Background(), "a", 30, o, nil); c == a {
		t.Fatalf("different seeds gave the same 30 characters %q", a)
	}
	// Flat logits with top-k 3: only the three lowest ids (stable order) are drawn.
	for _, r := range a {
		if r != '\n' && r != ' ' && r != 'a' {
			t.Fatalf("top-k 3 drew %q", r)
		}
	}
	if _, err := NewSampler(SampleOptions{Temperature: -1}); err == nil {
		t.Fatal("negative temperature accepted")
	}
	if _, err := NewSampler(SampleOptions{TopK: -1}); err == nil {
		t.Fatal("negative top-k accepted")
	}
}

func TestLoss(t *testing.T) {
	v := vocab(t)
	m := &Model{R: &fakeRunner{v: v.Size(), flat: true}, Vocab: v}
	l, err := m.Loss(context.Background(), "abcab cab\nab")
	if err != nil {
		t.Fatal(err)
	}
	if want := math.Log(float64(v.Size())); math.Abs(l-want) > 1e-6 {
		t.Fatalf("flat loss = %v, want log(V) = %v", l, want)
	}
	if _, err := m.Loss(context.Background(), "a"); err == nil {
		t.Fatal("loss of one character accepted")
	}
}
