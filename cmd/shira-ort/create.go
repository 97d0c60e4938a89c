package main

import (
	"fmt"
	"regexp"

	"github.com/spf13/cobra"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/synth"
)

// newCreateCmd is `shira-ort create`: a synthetic adapter over a mask.
func newCreateCmd() *cobra.Command {
	var (
		indexEnc                                       indexEncodingFlag
		model, maskName, out, targets, name, semantics string
		density, scale                                 float64
		seed                                           uint64
		r                                              int
		alpha                                          float32
	)
	cmd := &cobra.Command{
		Use:   "create --model DIR --mask rand|wm|struct (--density 0.01 | --r R) --scale S --seed N -o A.shira",
		Short: "Create an adapter with random values over a random, weight-magnitude or structured mask",
		Long: `create makes a synthetic adapter: normally distributed values (standard deviation --scale)
at the entries a mask picks in each exposed weight (those --targets selects): rand (random
entries), wm (the largest |weight|, the SHiRA paper's WM mask) or struct (every f-th row and
column plus the diagonal). --density is the fraction of each weight's entries; --r gives
PEFT's budget instead, r*(rows+cols) entries per weight.

It writes delta semantics by default (w = base + alpha*value), PEFT's form: the random
values are changes to the weights, so alpha scales them and adapters fused together add
their changes. --semantics overwrite stores base + value instead, the new weights themselves
(w = value at alpha 1: the paper's scatter, and extract's default).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := openExported(model)
			if err != nil {
				return err
			}
			defer m.Close()
			weights, err := m.ReadWeights(cmd.Context())
			if err != nil {
				return err
			}
			sem, err := adapter.ParseSemantics(semantics)
			if err != nil {
				return err
			}
			o := synth.Options{Name: name, Mask: synth.Mask(maskName), Density: density, R: r, Scale: scale,
				Seed: seed, Semantics: sem, Alpha: alpha}
			o.Name = adapterName(o.Name, out)
			if targets != "" {
				if o.Targets, err = regexp.Compile(targets); err != nil {
					return fmt.Errorf("--targets: %w", err)
				}
			}
			a, err := synth.New(m.Manifest(), weights, o)
			if err != nil {
				return err
			}
			if err := writeAdapter(out, a, indexEnc.enc); err != nil {
				return err
			}
			budget := fmt.Sprintf("density %g", density)
			if r > 0 {
				budget = fmt.Sprintf("r %d: r*(rows+cols) per weight", r)
			}
			var numel int
			for i := range a.Tensors {
				numel += a.Tensors[i].NumElements()
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%v semantics): %d tensors, %d values (%s mask, %s; overall density %.4f)\n",
				out, a.Semantics, len(a.Tensors), a.NNZ(), maskName, budget, float64(a.NNZ())/float64(max(numel, 1)))
			return nil
		},
	}
	f := cmd.Flags()
	addIndexEncodingFlag(f, &indexEnc)
	f.StringVar(&model, "model", "", "exported model directory")
	f.StringVar(&maskName, "mask", "rand", "mask: rand (random entries), wm (largest weight magnitude) or struct (every f-th row and column plus the diagonal)")
	f.Float64Var(&density, "density", 0.01, "fraction of each weight's entries the adapter touches")
	f.IntVar(&r, "r", 0, "PEFT-style budget instead of --density: r*(rows+cols) entries per weight")
	f.Float64Var(&scale, "scale", 0.05, "standard deviation of the random deltas")
	f.Uint64Var(&seed, "seed", 1, "random seed")
	f.StringVar(&semantics, "semantics", "delta", "delta (W += alpha*v, like PEFT) or overwrite (W = v, like the paper)")
	f.StringVar(&targets, "targets", "", "regular expression selecting exposed weights (default: all)")
	f.StringVar(&name, "name", "", "adapter name (default: the file name)")
	f.Float32Var(&alpha, "alpha", 1, "default alpha stored in the adapter")
	f.StringVarP(&out, "output", "o", "", "output .shira file")
	markRequired(cmd, "model", "output")
	cmd.MarkFlagsMutuallyExclusive("density", "r")
	return cmd
}
