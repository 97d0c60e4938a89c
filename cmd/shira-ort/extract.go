package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/extract"
)

// newExtractCmd is `shira-ort extract`: a SHiRA adapter from a full
// fine-tune (top-k of |ΔW| per tensor).
func newExtractCmd() *cobra.Command {
	var (
		indexEnc                          indexEncodingFlag
		base, tuned, out, name, semantics string
		density                           float64
		asJSON                            bool
	)
	cmd := &cobra.Command{
		Use:   "extract --base BASE.onnx|EXPORTED_DIR --tuned TUNED.onnx|EXPORTED_DIR --density D -o A.shira",
		Short: "Build a SHiRA adapter from a full fine-tune: the top-k |tuned - base| entries per tensor",
		Long: `extract compares every exposed weight of the base model with the same weight of the
fine-tuned model, keeps the --density largest |ΔW| entries per tensor and reports the fraction
of ‖ΔW‖² they keep. Each model is an exported directory or an ONNX file, which is exported into
a temporary directory the way ` + "`shira-ort export`" + ` does (same fingerprint, so the adapter
fits the base model exported with default options).

Unlike create and convert (delta semantics: w = base + alpha*value), extract writes
overwrite semantics by default: the stored values are the tuned weights, so at alpha 1 the
kept entries equal the fine-tune bit for bit. --semantics delta stores tuned - base instead.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			sem, err := adapter.ParseSemantics(semantics)
			if err != nil {
				return err
			}
			bm, err := openModelOrExport(cmd.Context(), base)
			if err != nil {
				return fmt.Errorf("--base: %w", err)
			}
			defer bm.Close()
			tm, err := openModelOrExport(cmd.Context(), tuned)
			if err != nil {
				return fmt.Errorf("--tuned: %w", err)
			}
			defer tm.Close()
			name = adapterName(name, out)
			a, rep, err := extract.FromModels(cmd.Context(), bm.Model, tm.Model, extract.Options{Name: name, Density: density, Semantics: sem})
			if err != nil {
				return err
			}
			if err := writeAdapter(out, a, indexEnc.enc); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(w, rep)
			}
			t := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
			fmt.Fprintln(t, "tensor\tchanged\tkept\tenergy\t|ΔW|")
			for _, r := range rep.Tensors {
				fmt.Fprintf(t, "%s\t%d\t%d\t%.4f\t%.4g\n", r.Tensor, r.Changed, r.NNZ, r.Energy, r.DeltaNorm)
			}
			t.Flush()
			fmt.Fprintf(w, "wrote %s (%v semantics): %d tensors, %d of %d changed entries, energy kept %.4f\n", out, a.Semantics, len(a.Tensors), rep.NNZ, rep.Changed, rep.Energy)
			return nil
		},
	}
	f := cmd.Flags()
	addIndexEncodingFlag(f, &indexEnc)
	f.StringVar(&base, "base", "", "base model: ONNX file or exported directory (the model the adapter is for)")
	f.StringVar(&tuned, "tuned", "", "fine-tuned model: ONNX file or exported directory")
	f.Float64Var(&density, "density", 0.01, "fraction of each tensor's entries kept")
	f.StringVar(&semantics, "semantics", "overwrite", "overwrite (store tuned values: kept entries exact) or delta (store tuned - base)")
	f.StringVar(&name, "name", "", "adapter name (default: the file name)")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.StringVarP(&out, "output", "o", "", "output .shira file")
	markRequired(cmd, "base", "tuned", "output")
	return cmd
}
