package textgen

import (
	"context"
	"fmt"

	"github.com/shira-ort/shira-ort/tensor"
)

// Runner runs the model; *ort.Session implements it.
type Runner interface {
	Run(ctx context.Context, inputs map[string]*tensor.Tensor) (map[string]*tensor.Tensor, error)
}

// Model is a character language model behind a Runner.
type Model struct {
	// R runs the ONNX model.
	R Runner
	// Vocab is the model's vocabulary.
	Vocab *Vocab
	// Input and Output name the token-id input and the logits output
	// ("tokens" and "logits" when empty).
	Input, Output string
}

func (m *Model) names() (string, string) {
	in, out := m.Input, m.Output
	if in == "" {
		in = "tokens"
	}
	if out == "" {
		out = "logits"
	}
	return in, out
}

// Logits runs the model on ids (cut to the last Vocab.Context ids) and
// returns the logits of every position, [len(ids)][vocab] flattened, and the
// number of positions.
func (m *Model) Logits(ctx context.Context, ids []int64) ([]float32, int, error) {
	if len(ids) == 0 {
		return nil, 0, fmt.Errorf("textgen: no input tokens")
	}
	if c := m.Vocab.Context; c > 0 && len(ids) > c {
		ids = ids[len(ids)-c:]
	}
	in, out := m.names()
	x, err := tensor.FromInt64([]int64{1, int64(len(ids))}, ids)
	if err != nil {
		return nil, 0, fmt.Errorf("textgen: %w", err)
	}
	outs, err := m.R.Run(ctx, map[string]*tensor.Tensor{in: x})
	if err != nil {
		return nil, 0, fmt.Errorf("textgen: run: %w", err)
	}
	y, ok := outs[out]
	if !ok {
		return nil, 0, fmt.Errorf("textgen: model has no output %q", out)
	}
	v := m.Vocab.Size()
	if len(y.Shape) != 3 || y.Shape[0] != 1 || y.Shape[1] != int64(len(ids)) || y.Shape[2] != int64(v) {
		return nil, 0, fmt.Errorf("textgen: output %q has shape %v, want [1 %d %d]", out, y.Shape, len(ids), v)
	}
	l, err := y.AsFloat32()
	if err != nil {
		return nil, 0, fmt.Errorf("textgen: output %q: %w", out, err)
	}
	return l, len(ids), nil
}

// NextLogits returns the logits of the token following ids.
func (m *Model) NextLogits(ctx context.Context, ids []int64) ([]float32, error) {
	l, n, err := m.Logits(ctx, ids)
	if err != nil {
		return nil, err
	}
	v := m.Vocab.Size()
	return l[(n-1)*v : n*v], nil
}

// Generate continues prompt by n characters sampled with o, calling emit
// (when not nil) with each new character as soon as it is drawn, and
// returns the generated characters (without the prompt). An error from emit
// stops generation and is returned.
func (m *Model) Generate(ctx context.Context, prompt string, n int, o SampleOptions, emit func(string) error) (string, error) {
	s, err := NewSampler(o)
	if err != nil {
		return "", err
	}
	ids := m.Vocab.Encode(prompt)
	if len(ids) == 0 {
		ids = m.Vocab.Encode("\n")
	}
	start := len(ids)
	for i := 0; i < n; i++ {
		l, err := m.NextLogits(ctx, ids)
		if err != nil {
			return m.Vocab.Decode(ids[start:]), err
		}
		id := int64(s.Next(l))
		ids = append(ids, id)
		if emit != nil {
			if err := emit(m.Vocab.Token(id)); err != nil {
				return m.Vocab.Decode(ids[start:]), err
			}
		}
	}
	return m.Vocab.Decode(ids[start:]), nil
}

// Loss is the mean cross-entropy (nats per character) of the model
// predicting each character of text from the ones before it, over windows
// of at most Vocab.Context characters.
func (m *Model) Loss(ctx context.Context, text string) (float64, error) {
	ids := m.Vocab.Encode(text)
	if len(ids) < 2 {
		return 0, fmt.Errorf("textgen: loss needs at least two characters")
	}
	c := m.Vocab.Context
	if c <= 0 {
		c = len(ids)
	}
	v := m.Vocab.Size()
	var sum float64
	var count int
	for lo := 0; lo+1 < len(ids); lo += c {
		hi := min(lo+c+1, len(ids))
		l, n, err := m.Logits(ctx, ids[lo:hi-1])
		if err != nil {
			return 0, err
		}
		for p := 0; p < n; p++ {
			sum += CrossEntropy(l[p*v:(p+1)*v], int(ids[lo+p+1]))
			count++
		}
	}
	return sum / float64(count), nil
}
