package textgen

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
)

// SampleOptions choose how the next token is drawn from the logits.
type SampleOptions struct {
	// Temperature divides the logits; 0 means greedy (argmax).
	Temperature float64
	// TopK keeps only the K most likely tokens; 0 keeps all.
	TopK int
	// Seed seeds the generator.
	Seed uint64
}

// Sampler draws token ids from logits; it is deterministic for a seed.
type Sampler struct {
	o     SampleOptions
	rng   *rand.Rand
	order []int
	probs []float64
}

// NewSampler returns a sampler for o; a negative temperature or top-k is an error.
func NewSampler(o SampleOptions) (*Sampler, error) {
	if o.Temperature < 0 || math.IsNaN(o.Temperature) || math.IsInf(o.Temperature, 0) {
		return nil, fmt.Errorf("textgen: temperature %v must be finite and >= 0", o.Temperature)
	}
	if o.TopK < 0 {
		return nil, fmt.Errorf("textgen: top-k %d must be >= 0", o.TopK)
	}
	return &Sampler{o: o, rng: rand.New(rand.NewPCG(o.Seed, 0x7368697261))}, nil
}

// Next picks a token id from one row of logits.
func (s *Sampler) Next(logits []float32) int {
	n := len(logits)
	if n == 0 {
		return 0
	}
	if s.o.Temperature == 0 {
		best := 0
		for i, l := range logits {
			if l > logits[best] {
				best = i
			}
		}
		return best
	}
	if cap(s.order) < n {
		s.order, s.probs = make([]int, n), make([]float64, n)
	}
	order, probs := s.order[:n], s.probs[:n]
	for i := range order {
		order[i] = i
	}
	// Stable sort by logit, highest first (ties by id), so top-k is well defined.
	sort.SliceStable(order, func(a, b int) bool { return logits[order[a]] > logits[order[b]] })
	k := n
	if s.o.TopK > 0 && s.o.TopK < n {
		k = s.o.TopK
	}
	maxL := float64(logits[order[0]])
	var sum float64
	for i := 0; i < k; i++ {
		p := math.Exp((float64(logits[order[i]]) - maxL) / s.o.Temperature)
		probs[i] = p
		sum += p
	}
	u := s.rng.Float64() * sum
	for i := 0; i < k; i++ {
		u -= probs[i]
		if u < 0 {
			return order[i]
		}
	}
	return order[k-1]
}
