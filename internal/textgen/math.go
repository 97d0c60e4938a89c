package textgen

import "math"

// CrossEntropy is -log softmax(logits)[target], computed stably.
func CrossEntropy(logits []float32, target int) float64 {
	maxL := math.Inf(-1)
	for _, l := range logits {
		maxL = math.Max(maxL, float64(l))
	}
	var sum float64
	for _, l := range logits {
		sum += math.Exp(float64(l) - maxL)
	}
	return maxL + math.Log(sum) - float64(logits[target])
}
