package main

import (
	"context"
	"fmt"
	"io"
	"slices"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/patch"
)

// minLandedUsage documents --min-landed.
const minLandedUsage = "quantized weights: warn when a weight (or all of them) keeps less than this fraction of the adapters' change: kept = 1 − ‖landed − intended‖ ÷ ‖intended‖, the intended change being the float result minus the base and the landed one what the new codes dequantize to minus the base"

// printSurvival prints, for the quantized weights in surv, how much of
// the adapters' change their codes kept, one line per weight and a total,
// and warns on errw when a fraction is below minLanded. Nothing is printed
// for a model without quantized weights.
func printSurvival(w, errw io.Writer, surv map[string]patch.Survival, minLanded float64) {
	if len(surv) == 0 {
		return
	}
	names := make([]string, 0, len(surv))
	for n := range surv {
		names = append(names, n)
	}
	slices.Sort(names)
	fmt.Fprintf(w, "quantized weights: what the codes kept of the adapters' change (kept = 1 − ‖landed − intended‖ ÷ ‖intended‖; ‖landed‖ ÷ ‖intended‖; along = ⟨landed, intended⟩ ÷ ‖intended‖²)\n")
	fmt.Fprintf(w, "  %-32s %9s %9s %9s %9s %9s %9s\n", "weight", "entries", "kept", "‖landed‖", "along", "unchanged", "clipped")
	var total patch.Survival
	var low []string
	line := func(name string, s patch.Survival) {
		fmt.Fprintf(w, "  %-32s %9d %8.1f%% %8.1f%% %8.1f%% %8.1f%% %8.1f%%\n", name, s.Touched, 100*kept(s), 100*s.LandedFraction(),
			100*s.Projection(), pct(s.Unchanged, s.Touched), pct(s.Clipped, s.Touched))
	}
	for _, n := range names {
		s := surv[n]
		line(n, s)
		total.Add(s)
		if s.IntendedSq > 0 && kept(s) < minLanded {
			low = append(low, n)
		}
	}
	line("(all)", total)
	if len(low) > 0 || total.IntendedSq > 0 && kept(total) < minLanded {
		fmt.Fprintf(errw, "warning: %d quantized weight(s) kept less than %.0f%% of the adapters' change (%v); the change is small next to the quantization step: make the adapter for this quantized model (codes land exactly: shira-ort bake stores them), scale it up (alpha), quantize with finer scales (per channel), or, when most codes stay unchanged, round stochastically (--rounding stochastic: unbiased, with up to a step of error per entry, so judge it by the along column)\n",
			len(low), 100*minLanded, low)
	}
}

// kept is 1 − ‖landed − intended‖ ÷ ‖intended‖ (1: every change landed
// exactly; 0 or less: as far off as not changing anything).
func kept(s patch.Survival) float64 { return 1 - s.RelativeError() }

// pct is 100·a/b, 0 when b is 0.
func pct(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}

// roundingUsage documents --rounding.
const roundingUsage = "quantized weights: how new codes are rounded, nearest (ONNX QuantizeLinear's, the default) or stochastic (unbiased: changes smaller than a step land in proportion, at up to a step of error each; deterministic); apply and run must be given the same to match bit for bit"

// roundingFlag is the --rounding flag (a pflag.Value).
type roundingFlag struct{ r patch.Rounding }

func (f *roundingFlag) String() string { return f.r.String() }
func (f *roundingFlag) Type() string   { return "nearest|stochastic" }
func (f *roundingFlag) Set(s string) (err error) {
	f.r, err = patch.ParseRounding(s)
	return err
}

// survivalOn fuses a (at its default alpha) into a copy of m's weights,
// rounding by r, to report what m's quantized weights keep of it; nil for
// a model without quantized weights.
func survivalOn(ctx context.Context, m *export.Model, a *adapter.Adapter, r patch.Rounding) (map[string]patch.Survival, error) {
	quantized := false
	for _, e := range m.Manifest().Tensors {
		quantized = quantized || e.Quant != nil
	}
	if !quantized {
		return nil, nil
	}
	weights, err := m.ReadWeights(ctx)
	if err != nil {
		return nil, err
	}
	var surv map[string]patch.Survival
	err = m.FuseInto(weights, []patch.Config{patch.Default(a)}, patch.WithoutFingerprintCheck(), patch.WithRounding(r),
		patch.WithSurvivalReport(func(s map[string]patch.Survival) { surv = s }))
	return surv, err
}
