package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// newBakeCmd is `shira-ort bake`: an adapter configuration stored as one
// overwrite adapter for one model (codes for its quantized weights).
func newBakeCmd() *cobra.Command {
	var (
		model, out, name string
		adapters         []string
		force            bool
		rounding         roundingFlag
		indexEnc         indexEncodingFlag
	)
	cmd := &cobra.Command{
		Use:   "bake --model DIR --adapter A.shira[:ALPHA]... -o OUT.shira",
		Short: "Store adapters' result on one model as a single overwrite adapter: codes for quantized weights, exact values for float ones",
		Long: `bake fuses the adapters (at their alphas, with --rounding for quantized weights) and writes the
result as one overwrite adapter made for this model: at every index they touch, the code written
there for a quantized weight (applied, it writes that code as it is: all of it lands, with 1 or 2
bytes per value instead of a float) and the fused value, in the weight's dtype, for a float weight.
It records the model's fingerprint and base weights, so other models refuse it. Use it to ship an
adapter trained on a float model to a quantized one with its rounding decided once, or a fused
combination of adapters as one file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := openExported(model)
			if err != nil {
				return err
			}
			defer m.Close()
			cfgs, closeAdapters, err := openAdapters(adapters, nil)
			if err != nil {
				return err
			}
			defer closeAdapters()
			opts := offlineFuseOptions(rounding.r, force)
			name = adapterName(name, out)
			a, err := m.Bake(cmd.Context(), cfgs, name, opts...)
			if err != nil {
				return err
			}
			a.Metadata["shira.rounding"] = rounding.r.String()
			if err := writeAdapter(out, a, indexEnc.enc); err != nil {
				return err
			}
			st, err := os.Stat(out)
			if err != nil {
				return err
			}
			codes := 0
			for _, t := range a.Tensors {
				if t.CodeValues() {
					codes++
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %d tensors (%d of codes), %d values, %d bytes; overwrite, made for model %.12s\n",
				out, len(a.Tensors), codes, a.NNZ(), st.Size(), a.ModelFingerprint)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&model, "model", "", "exported model directory")
	f.StringArrayVar(&adapters, "adapter", nil, adapterUsage)
	f.StringVarP(&out, "output", "o", "", "output .shira file")
	f.StringVar(&name, "name", "", "adapter name (default: the file name)")
	f.BoolVar(&force, "force", false, forceUsage)
	f.Var(&rounding, "rounding", roundingUsage)
	addIndexEncodingFlag(f, &indexEnc)
	markRequired(cmd, "model", "adapter", "output")
	return cmd
}
