package main

import (
	"fmt"
	"regexp"

	"github.com/spf13/cobra"

	"github.com/shira-ort/shira-ort/export"
)

// newExportCmd is `shira-ort export`: expose a model's patchable weights.
func newExportCmd() *cobra.Command {
	var out, targets string
	cmd := &cobra.Command{
		Use:   "export MODEL.onnx -o DIR",
		Short: "Expose a model's patchable weights (overridable initializers in a page-aligned weight file)",
		Long: `export writes DIR/model.onnx, DIR/model.weights and DIR/manifest.json. By default every
float weight of rank >= 2 that feeds MatMul, Gemm or Conv is exposed; --targets REGEX keeps only
weights whose name, source name or consuming node name matches.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var opts export.Options
			if targets != "" {
				re, err := regexp.Compile(targets)
				if err != nil {
					return fmt.Errorf("--targets: %w", err)
				}
				opts.Targets = re
			}
			m, err := export.Expose(cmd.Context(), args[0], out, opts)
			if err != nil {
				return err
			}
			var bytes int64
			for _, t := range m.Tensors {
				bytes += t.Length
			}
			fmt.Fprintf(cmd.OutOrStdout(), "exposed %d weights (%.1f MB) in %s\n", len(m.Tensors), float64(bytes)/1e6, out)
			for _, t := range m.Tensors {
				fmt.Fprintf(cmd.OutOrStdout(), "  %-40s %-8v %v\n", t.Name, t.DType, t.Shape)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "output directory")
	cmd.Flags().StringVar(&targets, "targets", "", "regular expression selecting the weights to expose")
	markRequired(cmd, "output")
	return cmd
}
