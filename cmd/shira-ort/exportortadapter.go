package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/shira-ort/shira-ort/internal/ortadapter"
)

// newExportOrtAdapterCmd is `shira-ort export-ort-adapter`: the exposed
// weights with adapters applied, as an ONNX Runtime .onnx_adapter file.
func newExportOrtAdapterCmd() *cobra.Command {
	var (
		model, out string
		adapters   []string
		all        bool
	)
	cmd := &cobra.Command{
		Use:   "export-ort-adapter --model DIR --adapter A.shira[:ALPHA]... -o OUT.onnx_adapter",
		Short: "Write the exposed weights with adapters applied as an ONNX Runtime .onnx_adapter file",
		Long: `The file holds one dense parameter per exposed weight the adapters touch (--all: every
exposed weight), named like the model's overridable initializer, so a plain ONNX Runtime
application loads DIR/model.onnx, creates a LoraAdapter from the file and activates it in
RunOptions to run with the adapted weights.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := openExported(model)
			if err != nil {
				return err
			}
			defer m.Close()
			fm, err := loadFused(cmd.Context(), m, adapters, false, 0) // float weights only: ORT adapters hold floats
			if err != nil {
				return err
			}
			var oa ortadapter.Adapter
			var bytes int
			for _, e := range fm.m.Manifest().Tensors {
				if all || fm.touched[e.Name] {
					oa.Parameters = append(oa.Parameters, ortadapter.Parameter{Name: e.Name, DType: e.DType, Dims: e.Shape, Data: fm.weights[e.Name]})
					bytes += len(fm.weights[e.Name])
				}
			}
			if err := ortadapter.Write(out, &oa); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %d parameters, %d bytes of weights\n", out, len(oa.Parameters), bytes)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&model, "model", "", "exported model directory")
	f.StringArrayVar(&adapters, "adapter", nil, adapterUsage)
	f.BoolVar(&all, "all", false, "include every exposed weight, not only those the adapters touch")
	f.StringVarP(&out, "output", "o", "", "output .onnx_adapter file")
	markRequired(cmd, "model", "adapter", "output")
	return cmd
}
