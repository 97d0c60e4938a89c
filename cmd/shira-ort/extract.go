package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
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
		Use:   "extract --base EXPORTED_DIR --tuned EXPORTED_DIR|TUNED.onnx --density D -o A.shira",
		Short: "Build a SHiRA adapter from a full fine-tune: the top-k |tuned - base| entries per tensor",
		Long: `extract compares every exposed weight of the base model (an exported directory, the one the
adapter will be used with) with the same weight of the fine-tuned model (an exported directory,
or an ONNX file exported the same way, which is exposed into a temporary directory), keeps the
--density largest |ΔW| entries per tensor and reports the fraction of ‖ΔW‖² they keep.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if base == "" || tuned == "" || out == "" {
				return fmt.Errorf("--base DIR, --tuned DIR|FILE.onnx and -o A.shira are required")
			}
			sem, err := adapter.ParseSemantics(semantics)
			if err != nil {
				return err
			}
			m, err := export.LoadManifest(base)
			if err != nil {
				return err
			}
			bw, err := export.ReadWeights(base, m)
			if err != nil {
				return err
			}
			tdir := tuned
			if st, err := os.Stat(tuned); err == nil && !st.IsDir() {
				tmp, err := os.MkdirTemp("", "shira-ort-extract-*")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				if _, err := export.Expose(tuned, tmp, export.Options{}); err != nil {
					return fmt.Errorf("exposing %s: %w", tuned, err)
				}
				tdir = tmp
			}
			tm, err := export.LoadManifest(tdir)
			if err != nil {
				return err
			}
			tw, err := export.ReadWeights(tdir, tm)
			if err != nil {
				return err
			}
			if name == "" {
				name = strings.TrimSuffix(filepath.Base(out), filepath.Ext(out))
			}
			a, rep, err := extract.FromPair(m, bw, tm, tw, extract.Options{Name: name, Density: density, Semantics: sem})
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
			fmt.Fprintf(w, "wrote %s: %d tensors, %d of %d changed entries, energy kept %.4f\n", out, len(a.Tensors), rep.NNZ, rep.Changed, rep.Energy)
			return nil
		},
	}
	f := cmd.Flags()
	addIndexEncodingFlag(f, &indexEnc)
	f.StringVar(&base, "base", "", "exported base model directory")
	f.StringVar(&tuned, "tuned", "", "fine-tuned model: exported directory or ONNX file")
	f.Float64Var(&density, "density", 0.01, "fraction of each tensor's entries kept")
	f.StringVar(&semantics, "semantics", "overwrite", "overwrite (store tuned values: kept entries exact) or delta (store tuned - base)")
	f.StringVar(&name, "name", "", "adapter name (default: the file name)")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.StringVarP(&out, "output", "o", "", "output .shira file")
	return cmd
}
