package quant

import (
	"fmt"
	"math"
)

// Rounding is how a value is rounded to a code.
type Rounding uint8

const (
	// RoundNearestEven rounds to the nearest code, ties to even: ONNX
	// QuantizeLinear's rounding, and the one that minimises each element's
	// error.
	RoundNearestEven Rounding = iota
	// RoundStochastic rounds x down or up with the probabilities that make
	// the expected code x itself: floor(x + u) with u in [0, 1) drawn per
	// element from a fixed hash of the element's index (Dither), so the
	// same configuration always gives the same codes, offline and live. A
	// change smaller than a step lands in proportion instead of never, and
	// the landed changes are unbiased on average, at the price of a larger
	// error per element (up to a whole step).
	RoundStochastic
)

// String returns "nearest" or "stochastic".
func (r Rounding) String() string {
	switch r {
	case RoundNearestEven:
		return "nearest"
	case RoundStochastic:
		return "stochastic"
	}
	return fmt.Sprintf("Rounding(%d)", uint8(r))
}

// ParseRounding parses "nearest" or "stochastic".
func ParseRounding(s string) (Rounding, error) {
	switch s {
	case "nearest", "":
		return RoundNearestEven, nil
	case "stochastic":
		return RoundStochastic, nil
	}
	return 0, fmt.Errorf("unknown rounding %q (want nearest or stochastic)", s)
}

// Valid reports whether r is one of the defined roundings.
func (r Rounding) Valid() bool { return r <= RoundStochastic }

// Round rounds x for element i.
func (r Rounding) Round(i uint32, x float64) float64 {
	if r == RoundStochastic {
		return math.Floor(x + Dither(i))
	}
	return math.RoundToEven(x)
}

// Dither returns element i's threshold for RoundStochastic: a number in
// [0, 1) from SplitMix64's output function of i (a fixed hash: the same
// for every weight, run and machine).
func Dither(i uint32) float64 {
	z := uint64(i) + 0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	z ^= z >> 31
	return float64(z>>11) * 0x1p-53
}
