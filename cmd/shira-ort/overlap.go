package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/overlap"
	"github.com/shira-ort/shira-ort/tensor"
)

// newOverlapCmd is `shira-ort overlap`: index overlap and the paper's
// AWOM / AWOR between adapters, per tensor and overall.
func newOverlapCmd() *cobra.Command {
	var (
		model  string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "overlap A.shira B.shira... [--model EXPORTED_DIR]",
		Short: "Report index overlap and orthogonality (AWOM, AWOR) between adapters, per tensor and overall",
		Long: `For every pair of adapters and every tensor both touch: the shared indices, their Jaccard
index, AWOM = ‖A₁ᵀA₂‖₂ (spectral norm; Frobenius also shown) and AWOR = 1 − ‖A₁ᵀA₂‖₀/m²
of the sparse delta matrices (scaled by each adapter's default alpha), computed sparsely.
Overwrite-semantics adapters (extract's default) store new weights rather than changes:
they need --model, the base model, to turn their values into deltas.

Reading the numbers: Jaccard 0 and AWOR 1 mean the adapters touch no common entry and
their products share no non-zero, so fused they do not interfere; a larger AWOM means
more interference between the two deltas (0: none).`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var as []*adapter.Adapter
			defer func() {
				for _, a := range as {
					a.Close()
				}
			}()
			for _, p := range args {
				a, err := adapter.Open(p)
				if err != nil {
					return err
				}
				if a.Name == "" {
					a.Name = p
				}
				as = append(as, a)
				if a.Semantics == adapter.Overwrite && model == "" {
					return fmt.Errorf("adapter %s (%s) stores overwrite values, new weights rather than changes: give its base model with --model EXPORTED_DIR to turn them into deltas", a.Name, p)
				}
			}
			var o overlap.Options
			if model != "" {
				m, err := openExported(model)
				if err != nil {
					return err
				}
				defer m.Close()
				w, err := m.ReadWeights(cmd.Context())
				if err != nil {
					return err
				}
				o.Base = overlap.BaseFromWeights(w, func(n string) (tensor.DType, []int64, bool) {
					if e := m.Manifest().Entry(n); e != nil {
						return e.DType, e.Shape, true
					}
					return 0, nil, false
				})
			}
			per, all, err := overlap.Compare(cmd.Context(), as, o)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(w, map[string]any{"tensors": per, "overall": all})
			}
			t := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
			fmt.Fprintln(t, "a\tb\ttensor\tnnz_a\tnnz_b\tshared\tjaccard\tAWOM\tAWOM_fro\tAWOR")
			row := func(p overlap.Pair, tensorName string) {
				fmt.Fprintf(t, "%s\t%s\t%s\t%d\t%d\t%d\t%.4f\t%.4g\t%.4g\t%.6f\n", p.NameA, p.NameB, tensorName,
					p.NNZA, p.NNZB, p.Shared, p.Jaccard, p.AWOM, p.AWOMFro, p.AWOR)
			}
			for _, p := range per {
				row(p, p.Tensor)
			}
			for _, p := range all {
				row(p, "(overall)")
			}
			return t.Flush()
		},
	}
	cmd.Flags().StringVar(&model, "model", "", "exported model directory (needed for overwrite-semantics adapters)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
